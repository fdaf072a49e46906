"""Job keys that cubemux adds for partitions, retention, columns and events."""

import dataclasses

import pytest

from cubemux import configspec, naming, timing
from cubemux.config import KEYS, JobConfig, load_job
from cubemux.configspec import RetentionPeriod
from cubemux.errors import ConfigError

from test_config import MINIMAL, load, only_problem, problems_of

# MINIMAL has four lines, so the first added key is on line 5.
FIRST_ADDED_LINE = 5


def job_with(tmp_path, *lines):
    return load(tmp_path, MINIMAL + "".join(line + "\n" for line in lines))


def problem_with(tmp_path, *lines):
    return only_problem(tmp_path, MINIMAL + "".join(line + "\n" for line in lines))


def only_warning(job):
    assert len(job.warnings) == 1, job.warnings
    return job.warnings[0]


def at_line(tmp_path, number):
    return "%s:%d: [cube_dispatcher] " % (tmp_path / "job.ini", number)


# The configspec.


def test_configspec_keys_are_job_fields():
    names = [field.name for field in dataclasses.fields(JobConfig)]
    assert names == ["path", *KEYS, "warnings"]


def test_configspec_lists_every_key_once():
    lines = [line for line in configspec.CONFIGSPEC.splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == len(KEYS)
    assert len(set(KEYS)) == len(KEYS)


def test_configspec_check_names_registered():
    for line in configspec.CONFIGSPEC.splitlines():
        if line and not line.startswith("#"):
            check = line.split("=", 1)[1].strip().split("(")[0]
            assert check in configspec._VALIDATOR.functions, line


def test_new_key_defaults(tmp_path):
    job = load(tmp_path, MINIMAL)
    assert job.part_mode == "batch_time"
    assert job.part_field is None
    assert job.period is None
    assert job.dateformat == "YYYY_MM_DD"
    assert job.pre_part == ""
    assert job.post_part == ""
    assert job.retention_period is None
    assert job.retention_action == "drop"
    assert job.ignore_old_events is False
    assert job.fields is None
    assert job.skip_fields == ()
    assert job.table_map == ()
    assert job.event_types == ("I", "U", "D")
    assert job.on_truncate == "error"
    assert job.on_new_column == "error"
    assert job.on_error == "stop"
    assert job.warnings == ()


# part_mode and part_field.


@pytest.mark.parametrize("mode", naming.PART_MODES)
def test_part_mode_accepted(tmp_path, mode):
    job = job_with(tmp_path, "part_mode = %s" % mode, "part_field = created")
    assert job.part_mode == mode


def test_part_mode_invalid(tmp_path):
    problem = problem_with(tmp_path, "part_mode = ev_time")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "part_mode = 'ev_time' is invalid" in problem
    assert "expected batch_time, event_time, date_field or current_time" in problem


def test_part_mode_case_sensitive(tmp_path):
    problem = problem_with(tmp_path, "part_mode = Event_Time")
    assert "part_mode = 'Event_Time' is invalid" in problem


def test_date_field_needs_part_field(tmp_path):
    problem = problem_with(tmp_path, "part_mode = date_field")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "part_mode = date_field needs part_field" in problem
    assert "set part_field to the date or timestamp column" in problem


def test_date_field_with_part_field(tmp_path):
    job = job_with(tmp_path, "part_mode = date_field", "part_field = created_at")
    assert job.part_field == "created_at"
    assert job.warnings == ()


@pytest.mark.parametrize("mode", ["batch_time", "event_time", "current_time"])
def test_part_field_unused_warning(tmp_path, mode):
    job = job_with(tmp_path, "part_mode = %s" % mode, "part_field = created_at")
    warning = only_warning(job)
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "part_field is ignored because part_mode is %s" % mode in warning
    assert "set part_mode = date_field" in warning


def test_part_field_unused_default_mode(tmp_path):
    warning = only_warning(job_with(tmp_path, "part_field = created_at"))
    assert "because part_mode is batch_time" in warning


@pytest.mark.parametrize("text, reason", [
    ("", "a name is empty"),
    ("x" * 64, "is 64 bytes long, more than PostgreSQL's limit of 63"),
])
def test_part_field_invalid(tmp_path, text, reason):
    problem = problem_with(tmp_path, "part_mode = date_field",
                           "part_field = %s" % text)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "part_field = %r is invalid: expected a column name" % text in problem
    assert reason in problem


def test_part_field_one_line(tmp_path):
    problem = problem_with(tmp_path, "part_mode = date_field",
                           "part_field = created", "  at")
    assert "part_field continues on line %d" % (FIRST_ADDED_LINE + 2) in problem


def test_part_field_63_bytes_accepted(tmp_path):
    name = "\u00e4" * 31 + "x"
    job = job_with(tmp_path, "part_mode = date_field", "part_field = %s" % name)
    assert job.part_field == name


def test_event_time_unsupported_dateformat(tmp_path):
    problem = problem_with(tmp_path, "part_mode = event_time",
                           "dateformat = YYYY_Mon")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "dateformat = 'YYYY_Mon'" in problem
    assert "not supported for partition times computed by cubemux" in problem
    assert "part_mode = batch_time" in problem


def test_batch_time_any_dateformat(tmp_path):
    job = job_with(tmp_path, "dateformat = YYYY_Mon")
    assert job.dateformat == "YYYY_Mon"
    assert job.warnings == ()


def test_per_event_mode_empty_dateformat_warning(tmp_path):
    job = job_with(tmp_path, "part_mode = current_time", "dateformat =")
    warning = only_warning(job)
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "part_mode = current_time has no effect" in warning
    assert "dateformat is empty" in warning


def test_per_event_mode_unknown_zone(tmp_path):
    problem = problem_with(tmp_path, "part_mode = event_time",
                           "timezone = Mars/Olympus")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "timezone = 'Mars/Olympus' is not found" in problem
    assert "part_mode = event_time" in problem
    assert "'Europe/Tallinn'" in problem


@pytest.mark.parametrize("setting, user", [
    ("retention_period = 3 months", "which retention_period needs"),
    ("pre_part = select _PART_START", "which _PART_START or _PART_END needs"),
])
def test_computed_bounds_unknown_zone(tmp_path, setting, user):
    problem = problem_with(tmp_path, "timezone = Mars/Olympus", setting)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "timezone = 'Mars/Olympus' is not found" in problem
    assert user in problem


def test_per_event_mode_known_zone(tmp_path):
    job = job_with(tmp_path, "part_mode = event_time", "timezone = Europe/Tallinn")
    assert job.timezone == "Europe/Tallinn"


def test_batch_time_zone_left_to_server(tmp_path):
    # The source server checks the zone when the worker sets it.
    assert job_with(tmp_path, "timezone = Mars/Olympus").timezone == "Mars/Olympus"


# period and dateformat.


@pytest.mark.parametrize("period", sorted(timing.PERIOD_FORMATS))
def test_period_sets_dateformat(tmp_path, period):
    job = job_with(tmp_path, "period = %s" % period)
    assert job.period == period
    assert job.dateformat == timing.PERIOD_FORMATS[period]
    assert job.warnings == ()


def test_period_invalid(tmp_path):
    problem = problem_with(tmp_path, "period = week")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "period = 'week' is invalid: expected hour, day, month or year" in problem


def test_period_error_lists_every_period(tmp_path):
    problem = problem_with(tmp_path, "period = daily")
    for period in timing.PERIOD_FORMATS:
        assert period in problem


@pytest.mark.parametrize("dateformat", ["YYYY_MM", "YYYY_MM_DD", ""])
def test_period_and_dateformat_error(tmp_path, dateformat):
    problem = problem_with(tmp_path, "period = day", "dateformat = %s" % dateformat)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "dateformat = %r and period = day are both set" % dateformat in problem
    assert "YYYY_MM_DD" in problem
    assert "keep only one of the two lines" in problem


def test_period_and_default_dateformat_error(tmp_path):
    text = "[DEFAULT]\ndateformat = YYYY_MM\n" + MINIMAL + "period = month\n"
    problem = only_problem(tmp_path, text)
    assert problem.startswith(at_line(tmp_path, 2))
    assert "keep only one" in problem


# pre_part and post_part.


@pytest.mark.parametrize("key", ["pre_part", "post_part"])
def test_hook_spans_lines(tmp_path, key):
    job = job_with(tmp_path, "%s =" % key, "    set local lock_timeout = '5s';",
                   "    select 1;")
    assert getattr(job, key) == "set local lock_timeout = '5s';\nselect 1;"


@pytest.mark.parametrize("key", ["pre_part", "post_part"])
def test_hook_triple_quoted(tmp_path, key):
    job = job_with(tmp_path, "%s = '''select 1;" % key, "select 2;'''")
    assert getattr(job, key) == "select 1;\nselect 2;"


@pytest.mark.parametrize("key", ["part_template", "pre_part", "post_part"])
def test_bounds_need_period(tmp_path, key):
    problem = problem_with(tmp_path, "dateformat =",
                           "%s = select _PART_START, _PART_END" % key)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "%s uses _PART_START or _PART_END" % key in problem
    assert "set period" in problem


def test_bounds_unknown_to_char_field(tmp_path):
    problem = problem_with(tmp_path, "dateformat = Mon",
                           "post_part = select _PART_END")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "dateformat = 'Mon' names none" in problem


def test_bounds_in_two_keys(tmp_path):
    problems = problems_of(tmp_path, MINIMAL + "dateformat =\n"
                           "pre_part = select _PART_START\n"
                           "post_part = select _PART_END\n")
    assert len(problems) == 2
    assert "pre_part uses" in problems[0]
    assert "post_part uses" in problems[1]


@pytest.mark.parametrize("setting", [
    "period = hour", "dateformat = YYYY_MM", "dateformat = YYYY_Q",
    "dateformat = YYYY_MM_DD_HH24MI",
])
def test_bounds_with_known_unit(tmp_path, setting):
    job = job_with(tmp_path, setting, "pre_part = select _PART_START")
    assert job.pre_part == "select _PART_START"


def test_bounds_in_multiline_template(tmp_path):
    problem = problem_with(tmp_path, "dateformat =", "part_template =",
                           "    create table _DEST_TABLE (like _PARENT);",
                           "    alter table _PARENT attach partition _DEST_TABLE",
                           "    for values from (_PART_START) to (_PART_END)")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "part_template uses _PART_START" in problem


# retention_period, retention_action and ignore_old_events.


@pytest.mark.parametrize("text, count, unit", [
    ("3 months", 3, "month"),
    ("90 days", 90, "day"),
    ("12 hours", 12, "hour"),
    ("1 year", 1, "year"),
    ("2 weeks", 2, "week"),
    ("1 day", 1, "day"),
    ("5days", 5, "day"),
    ("3 Months", 3, "month"),
    ("1000 years", 1000, "year"),
])
def test_retention_period_accepted(tmp_path, text, count, unit):
    job = job_with(tmp_path, "retention_period = %s" % text)
    assert job.retention_period == RetentionPeriod(count, unit)


@pytest.mark.parametrize("text", [
    "", "3", "months", "0 days", "-1 day", "+1 day", "1.5 days", "3 fortnights",
    "3 months ago", "3 minutes", "\u0663 days", "1001 years", "99999999999 hours",
    "3 months  # keep a quarter",
])
def test_retention_period_invalid(tmp_path, text):
    problem = problem_with(tmp_path, "retention_period = %s" % text)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "retention_period = %r is invalid" % text in problem
    assert "'3 months', '90 days' or '12 hours'" in problem
    assert "hours, days, weeks, months, years" in problem


def test_retention_period_frozen(tmp_path):
    retention = job_with(tmp_path, "retention_period = 2 weeks").retention_period
    assert str(retention) == "2 weeks"
    with pytest.raises(dataclasses.FrozenInstanceError):
        retention.count = 3


def test_retention_period_singular_text():
    assert str(RetentionPeriod(1, "year")) == "1 year"


@pytest.mark.parametrize("setting", [
    "period = month", "dateformat = YYYY_MM", "dateformat = YYYYMMDD",
    "dateformat = YYYY_MM_DD_HH24", "dateformat = \"p\"YYYY",
])
def test_retention_readable_dateformat(tmp_path, setting):
    job = job_with(tmp_path, setting, "retention_period = 3 months")
    assert job.retention_period == RetentionPeriod(3, "month")


@pytest.mark.parametrize("dateformat", [
    "", "YY_MM", "MM_DD", "YYYY_Q", "YYYY_DDD", "YYYY_MM_DD_HH12", "YYYY_Mon",
])
def test_retention_unreadable_dateformat(tmp_path, dateformat):
    problem = problem_with(tmp_path, "dateformat = %s" % dateformat,
                           "retention_period = 30 days")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "retention_period = '30 days' needs partition names" in problem
    assert "dateformat = %r cannot be read back" % dateformat in problem
    assert "such as YYYY_MM_DD" in problem


@pytest.mark.parametrize("action", ["drop", "detach"])
def test_retention_action_accepted(tmp_path, action):
    job = job_with(tmp_path, "retention_period = 1 year",
                   "retention_action = %s" % action)
    assert job.retention_action == action
    assert job.warnings == ()


def test_retention_action_invalid(tmp_path):
    problem = problem_with(tmp_path, "retention_action = delete")
    assert "retention_action = 'delete' is invalid: expected drop or detach" in problem


def test_retention_action_without_period_warning(tmp_path):
    warning = only_warning(job_with(tmp_path, "retention_action = detach"))
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "retention_action is ignored because retention_period is not set" in warning


@pytest.mark.parametrize("text, value", [("1", True), ("yes", True), ("off", False)])
def test_ignore_old_events_accepted(tmp_path, text, value):
    job = job_with(tmp_path, "retention_period = 90 days",
                   "ignore_old_events = %s" % text)
    assert job.ignore_old_events is value
    assert job.warnings == ()


def test_ignore_old_events_invalid(tmp_path):
    problem = problem_with(tmp_path, "ignore_old_events = sometimes")
    assert "ignore_old_events = 'sometimes' is invalid" in problem
    assert "1, 0, true, false, yes, no, on or off" in problem


def test_ignore_old_events_without_retention_warning(tmp_path):
    warning = only_warning(job_with(tmp_path, "ignore_old_events = true"))
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "ignore_old_events is ignored because retention_period" in warning


def test_ignore_old_events_false_no_warning(tmp_path):
    assert job_with(tmp_path, "ignore_old_events = false").warnings == ()


# fields and skip_fields.


def test_fields_pairs(tmp_path):
    job = job_with(tmp_path, "fields = id, name:title , created_at")
    assert job.fields == (("id", "id"), ("name", "title"),
                          ("created_at", "created_at"))


def test_fields_span_lines(tmp_path):
    job = job_with(tmp_path, "fields = id,", "    name:title,", "    amount")
    assert job.fields == (("id", "id"), ("name", "title"), ("amount", "amount"))


@pytest.mark.parametrize("text, reason", [
    ("", "at least one column (remove the line to copy every column)"),
    ("id,,name", "item 2 of 3 is empty"),
    ("id,", "item 2 of 2 is empty"),
    ("a:b:c", "'a:b:c' has more than one ':'"),
    ("a:", "a name is empty"),
    (":b", "a name is empty"),
    ("id, id:other", "but source column id is listed twice"),
    ("a:x, b:x", "but target column x is listed twice"),
    ("x" * 64, "more than PostgreSQL's limit of 63"),
])
def test_fields_invalid(tmp_path, text, reason):
    problem = problem_with(tmp_path, "fields = %s" % text)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "fields = %r is invalid" % text in problem
    assert "expected a comma-separated list of column names" in problem
    assert reason in problem


def test_fields_missing_comma_across_lines(tmp_path):
    problem = problem_with(tmp_path, "fields = id", "    name")
    assert "'id\\nname' contains a line break" in problem
    assert "separate names with commas" in problem


def test_skip_fields(tmp_path):
    job = job_with(tmp_path, "skip_fields = password, internal_note")
    assert job.skip_fields == ("password", "internal_note")


def test_skip_fields_empty(tmp_path):
    assert job_with(tmp_path, "skip_fields =").skip_fields == ()


@pytest.mark.parametrize("text, reason", [
    ("a,,b", "item 2 of 3 is empty"),
    ("a, a", "but column a is listed twice"),
])
def test_skip_fields_invalid(tmp_path, text, reason):
    problem = problem_with(tmp_path, "skip_fields = %s" % text)
    assert "skip_fields = %r is invalid" % text in problem
    assert "expected a comma-separated list of column names" in problem
    assert reason in problem


def test_skip_fields_overlap_fields(tmp_path):
    problem = problem_with(tmp_path, "fields = id, secret:hidden",
                           "skip_fields = secret")
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "skip_fields lists secret, which fields also lists" in problem


def test_skip_fields_with_fields_warning(tmp_path):
    job = job_with(tmp_path, "fields = id, name", "skip_fields = secret")
    warning = only_warning(job)
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "skip_fields has no effect because fields lists" in warning


# table_map.


def test_table_map_pairs(tmp_path):
    job = job_with(tmp_path, "table_map = public.orders:cube.orders,",
                   "    shop.items : cube.shop_items")
    assert job.table_map == (
        (("public", "orders"), ("cube", "orders")),
        (("shop", "items"), ("cube", "shop_items")),
    )


def test_table_map_empty(tmp_path):
    assert job_with(tmp_path, "table_map =").table_map == ()


@pytest.mark.parametrize("text, reason", [
    ("public.a", "'public.a' does not have one ':' between two tables"),
    ("public.a:b.c:d.e", "does not have one ':'"),
    ("a:cube.a", "'a' in 'a:cube.a' is not written schema.table"),
    ("public.a:cube", "'cube' in 'public.a:cube' is not written schema.table"),
    ("x.public.a:cube.a", "is not written schema.table"),
    ("public.:cube.a", "is not written schema.table"),
    ("public.a:cube.a,", "item 2 of 2 is empty"),
    ("public.a:cube.a, public.a:cube.b",
     "but source table public.a is mapped twice"),
])
def test_table_map_invalid(tmp_path, text, reason):
    problem = problem_with(tmp_path, "table_map = %s" % text)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "table_map = %r is invalid" % text in problem
    assert "source_schema.table:dest_schema.table" in problem
    assert reason in problem


def test_table_map_two_sources_one_parent(tmp_path):
    job = job_with(tmp_path, "table_map = a.t:cube.t, b.t:cube.t")
    assert len(job.table_map) == 2


# event_types.


@pytest.mark.parametrize("text, value", [
    ("I", ("I",)),
    ("I,U", ("I", "U")),
    ("U, I", ("I", "U")),
    ("D,U,I", ("I", "U", "D")),
])
def test_event_types_accepted(tmp_path, text, value):
    assert job_with(tmp_path, "event_types = %s" % text).event_types == value


@pytest.mark.parametrize("text, reason", [
    ("", "with at least one of them"),
    ("i", "'i' is not one of them"),
    ("I,T", "'T' is not one of them"),
    ("I,,U", "'' is not one of them"),
    ("I U", "'I U' is not one of them"),
    ("I,I", "but event type I is listed twice"),
])
def test_event_types_invalid(tmp_path, text, reason):
    problem = problem_with(tmp_path, "event_types = %s" % text)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "event_types = %r is invalid" % text in problem
    assert "a comma-separated list of I, U and D" in problem
    assert reason in problem


def test_keep_all_deletes_warning(tmp_path):
    job = job_with(tmp_path, "mode = keep_all", "event_types = I,U,D")
    warning = only_warning(job)
    assert warning.startswith(at_line(tmp_path, FIRST_ADDED_LINE + 1))
    assert "event_types lists D, but mode = keep_all" in warning
    assert "remove D from event_types, or set mode = keep_latest" in warning


def test_keep_all_default_types_no_warning(tmp_path):
    assert job_with(tmp_path, "mode = keep_all").warnings == ()


def test_keep_all_without_deletes(tmp_path):
    job = job_with(tmp_path, "mode = keep_all", "event_types = I,U")
    assert job.event_types == ("I", "U")
    assert job.warnings == ()


def test_keep_latest_deletes_no_warning(tmp_path):
    assert job_with(tmp_path, "event_types = I,U,D").warnings == ()


# on_truncate, on_new_column and on_error.


@pytest.mark.parametrize("key, values", [
    ("on_truncate", ["error", "ignore", "truncate"]),
    ("on_new_column", ["error", "ignore", "add"]),
    ("on_error", ["stop", "deadletter"]),
])
def test_event_policy_accepted(tmp_path, key, values):
    for value in values:
        assert getattr(job_with(tmp_path, "%s = %s" % (key, value)), key) == value


@pytest.mark.parametrize("key, expected", [
    ("on_truncate", "error, ignore or truncate"),
    ("on_new_column", "error, ignore or add"),
    ("on_error", "stop or deadletter"),
])
def test_event_policy_invalid(tmp_path, key, expected):
    problem = problem_with(tmp_path, "%s = skip" % key)
    assert problem.startswith(at_line(tmp_path, FIRST_ADDED_LINE))
    assert "%s = 'skip' is invalid: expected %s" % (key, expected) in problem


# Several new keys at once.


def test_new_key_errors_reported_together(tmp_path):
    text = MINIMAL + ("part_mode = date_time\n"
                      "period = week\n"
                      "retention_period = forever\n"
                      "event_types =\n"
                      "on_error = retry\n")
    problems = problems_of(tmp_path, text)
    assert len(problems) == 5
    for offset, key in enumerate(["part_mode", "period", "retention_period",
                                  "event_types", "on_error"]):
        assert problems[offset].startswith(at_line(tmp_path, FIRST_ADDED_LINE + offset))
        assert "%s = " % key in problems[offset]


def test_combination_checks_wait_for_valid_keys(tmp_path):
    # A key that is invalid on its own is not also reported against others.
    problem = problem_with(tmp_path, "part_mode = date_field", "part_field =")
    assert "part_field = '' is invalid" in problem


def test_full_job(tmp_path):
    job = job_with(tmp_path,
                   "part_mode = date_field",
                   "part_field = created_at",
                   "period = month",
                   "pre_part = set local lock_timeout = '5s'",
                   "post_part = analyze _DEST_TABLE",
                   "retention_period = 12 months",
                   "retention_action = detach",
                   "ignore_old_events = yes",
                   "fields = id, created_at, total:amount",
                   "table_map = shop.orders:cube.orders",
                   "event_types = I,U",
                   "on_truncate = truncate",
                   "on_new_column = add",
                   "on_error = deadletter",
                   "timezone = UTC")
    assert job.warnings == ()
    assert job.dateformat == "YYYY_MM"
    assert job.retention_period == RetentionPeriod(12, "month")
    assert job.fields[2] == ("total", "amount")
    assert job.table_map == ((("shop", "orders"), ("cube", "orders")),)
    assert load_job(job.path) == job


@pytest.mark.parametrize("dsn", ["dbname=x bogus", "PASSWORD=x dbname=y"])
def test_invalid_connection_string_rejected(tmp_path, dsn):
    path = tmp_path / "job.ini"
    path.write_text("[cube_dispatcher]\nsrc_db = %s\ndst_db = dbname=d\n"
                    "pgq_queue_name = q\n" % dsn)
    with pytest.raises(ConfigError) as caught:
        load_job(str(path))
    assert "src_db is invalid: expected a libpq connection string" in str(caught.value)


def test_huge_loop_delay_rejected(tmp_path):
    path = tmp_path / "job.ini"
    path.write_text("[cube_dispatcher]\nsrc_db = dbname=s\ndst_db = dbname=d\n"
                    "pgq_queue_name = q\nloop_delay = 1e23\n")
    with pytest.raises(ConfigError) as caught:
        load_job(str(path))
    assert "from 0 to 86400" in str(caught.value)
