"""A multipart/form-data body taken apart as it streams (`form.py`, streaming-form-data
with our checks around it: `framing.py` for the preamble and the close delimiter), with
the request's boundary read by RFC rules (`boundary.py`, `params.py`) and client file
names made fit to show (`names.py`)."""

from .form import PART_OVERHEAD, FileSink, MultipartForm, multipart_body_limit
from .framing import MAX_EPILOGUE, MAX_PREAMBLE
from .names import display_name

__all__ = ["MAX_EPILOGUE", "MAX_PREAMBLE", "PART_OVERHEAD", "FileSink", "MultipartForm", "display_name",
           "multipart_body_limit"]
