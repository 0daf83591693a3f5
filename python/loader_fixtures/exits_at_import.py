"""A handler module whose import ends the process: a worker that dies before it is ever ready."""

import os

os._exit(7)
