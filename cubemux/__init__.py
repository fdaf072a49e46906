"""cubemux: run many PgQ cube_dispatcher jobs from one master process."""

__version__ = "0.1.0"
