'use strict'
/*
 * Drives tus-js-client (its Node build) against a running uploadsrv, for
 * tests/test_tus_clients.py. It owns nothing but one upload per run and never checks
 * what the server stored: the Python test does that over HTTP.
 *
 *   node tus_upload.cjs '<JSON spec>'
 *
 * spec: {scenario, endpoint, file, metadata, options, abortAfter, urlStorage}
 *   scenario "upload": one upload of `file` (an fs.ReadStream) with `options` merged in
 *                      (chunkSize, parallelUploads, uploadDataDuringCreation, ...).
 *   scenario "stream": the file as a plain Readable of unknown size (uploadLengthDeferred).
 *   scenario "resume": start an upload, abort it once `abortAfter` bytes were sent, then a
 *                      NEW Upload finds it in the file-based URL storage and finishes it.
 *
 * Prints exactly one JSON line on stdout: {"url": ...} plus what the scenario observed,
 * or {"error", "status", "body"} (the server's answer, if any) with exit status 1.
 */

const fs = require('fs')
const { PassThrough } = require('stream')
const tus = require('tus-js-client')

function print(result) {
  process.stdout.write(`${JSON.stringify(result)}\n`)
}

// Runs one Upload to its end: resolves with the upload, rejects with its error.
function run(upload) {
  return new Promise((resolve, reject) => {
    upload.options.onSuccess = () => resolve(upload)
    upload.options.onError = reject
    upload.start()
  })
}

// What the client sent and the server answered: "METHOD status" per request, the
// offsets HEAD reported, the partial uploads created, whether the length was deferred.
function recorder() {
  const seen = { requests: [], headOffsets: [], partialUrls: [], deferredLength: false }
  return {
    seen,
    onAfterResponse(request, response) {
      // "POST(PATCH)" is a PATCH sent as POST with X-HTTP-Method-Override.
      const override = request.getHeader('X-HTTP-Method-Override')
      const method = override ? `${request.getMethod()}(${override})` : request.getMethod()
      seen.requests.push(`${method} ${response.getStatus()}`)
      if (request.getHeader('Upload-Defer-Length') === '1') seen.deferredLength = true
      if (request.getHeader('Upload-Concat') === 'partial' && response.getStatus() === 201) {
        seen.partialUrls.push(response.getHeader('Location'))
      }
      if (method === 'HEAD' && response.getStatus() === 200) {
        seen.headOffsets.push(Number(response.getHeader('Upload-Offset')))
      }
    },
  }
}

async function upload(spec) {
  const rec = recorder()
  const done = await run(new tus.Upload(fs.createReadStream(spec.file), {
    endpoint: spec.endpoint,
    metadata: spec.metadata,
    retryDelays: null, // a failure must show, not be retried away
    onAfterResponse: rec.onAfterResponse,
    ...spec.options,
  }))
  return { url: done.url, ...rec.seen }
}

async function stream(spec) {
  // A PassThrough has no path: tus-js-client cannot know its size nor fingerprint it.
  const source = fs.createReadStream(spec.file).pipe(new PassThrough())
  const rec = recorder()
  const done = await run(new tus.Upload(source, {
    endpoint: spec.endpoint,
    metadata: spec.metadata,
    retryDelays: null,
    uploadLengthDeferred: true,
    onAfterResponse: rec.onAfterResponse,
    ...spec.options,
  }))
  return { url: done.url, ...rec.seen }
}

async function resume(spec) {
  const urlStorage = new tus.FileUrlStorage(spec.urlStorage)
  const common = {
    endpoint: spec.endpoint,
    metadata: spec.metadata,
    urlStorage,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    ...spec.options,
  }
  // The first attempt: cut off mid-request, as a closed laptop lid would.
  const first = new tus.Upload(fs.createReadStream(spec.file), { ...common, retryDelays: null })
  let sentBeforeAbort = 0
  await new Promise((resolve, reject) => {
    first.options.onProgress = (sent) => {
      if (sent >= spec.abortAfter && sentBeforeAbort === 0) {
        sentBeforeAbort = sent
        first.abort().then(resolve, reject)
      }
    }
    first.options.onSuccess = () => reject(new Error('the first upload finished before it was aborted'))
    first.options.onError = reject
    first.start()
  })
  // A new Upload object, as after a page reload: it finds the first one's URL by fingerprint.
  // The default retry delays stand: the server may answer 423 while it still stores the cut request.
  const rec = recorder()
  const second = new tus.Upload(fs.createReadStream(spec.file), { ...common, onAfterResponse: rec.onAfterResponse })
  const previous = await second.findPreviousUploads()
  if (previous.length !== 1) throw new Error(`expected one previous upload, found ${previous.length}`)
  second.resumeFromPreviousUpload(previous[0])
  await run(second)
  // tus-js-client removes the fingerprint without waiting for it before onSuccess: poll.
  let left = await urlStorage.findAllUploads()
  for (let waited = 0; left.length > 0 && waited < 2000; waited += 50) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    left = await urlStorage.findAllUploads()
  }
  return {
    url: second.url,
    firstUrl: first.url,
    previousUrl: previous[0].uploadUrl,
    sentBeforeAbort,
    urlsLeftInStorage: left.length,
    ...rec.seen,
  }
}

const scenarios = { upload, stream, resume }

async function main() {
  const spec = JSON.parse(process.argv[2])
  const scenario = scenarios[spec.scenario]
  if (!scenario) throw new Error(`unknown scenario ${spec.scenario}`)
  print(await scenario(spec))
}

main().catch((error) => {
  // A DetailedError carries the server's answer: its status and JSON error body.
  const response = error && error.originalResponse
  print({
    error: String(error && error.stack ? error.stack : error),
    status: response ? response.getStatus() : null,
    body: response ? response.getBody() : null,
  })
  process.exit(1)
})
