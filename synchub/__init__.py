"""synchub: pull customer records from every tool, clean and match them into golden records,
and push the result back out."""

__version__ = "0.1.0"
