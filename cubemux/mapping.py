"""Field mapping: which events and columns a job applies, and under which names.

``event_types`` keeps only some operations, ``table_map`` sends a source
table to another destination parent, ``fields`` keeps and renames listed
columns and ``skip_fields`` drops columns. A job without these keys applies
every event as it is.
"""

from cubemux.errors import EventError


class FieldMap:
    """Applies a job's mapping keys to decoded events."""

    def __init__(self, job):
        self.event_types = frozenset(job.event_types or "IUD")
        self.tables = dict(job.table_map or ())
        fields = job.fields
        self.renames = dict(fields) if fields else None
        self.skipped = frozenset(job.skip_fields or ())
        self.keep_latest = job.mode == "keep_latest"
        self.filters_ops = self.event_types != frozenset("IUD")
        self.changes_columns = self.renames is not None or bool(self.skipped)
        self._plans = {}

    def wants(self, op):
        """Return True when the job applies events of operation OP."""
        return op in self.event_types

    def destination(self, schema, table):
        """Return the (schema, table) of the destination parent for a source table."""
        return self.tables.get((schema, table), (schema, table))

    def apply(self, event):
        """Rename and drop EVENT's columns in place, as fields and skip_fields set."""
        if not self.changes_columns:
            return
        plan = self._plans.get(event.columns)
        if plan is None:
            plan = self._plan(event.columns)
            self._plans[event.columns] = plan
        indexes, names = plan
        event.select(indexes, names)
        if event.pkeys:
            event.pkeys = self._map_keys(event)

    def _plan(self, columns):
        indexes = []
        names = []
        for index, column in enumerate(columns):
            if column in self.skipped:
                continue
            if self.renames is not None:
                if column not in self.renames:
                    continue
                names.append(self.renames[column])
            else:
                names.append(column)
            indexes.append(index)
        return indexes, tuple(names)

    def _map_keys(self, event):
        keys = []
        for key in event.pkeys:
            kept = key not in self.skipped and (
                self.renames is None or key in self.renames)
            if not kept:
                if self.keep_latest:
                    raise EventError(
                        "primary key column %s is dropped by fields or skip_fields, "
                        "but mode = keep_latest needs it: keep the column" % key,
                        event.ev_id, event.qualified_table)
                continue
            keys.append(self.renames[key] if self.renames is not None else key)
        return tuple(keys)
