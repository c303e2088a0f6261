"""Errors that the CLI reports as one line, never as a traceback."""


class PointSSLError(Exception):
    """A user-facing problem (bad input file, bad option). The CLI prints ``str(e)`` only."""


class DataError(PointSSLError):
    """A data file that cannot be used. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
