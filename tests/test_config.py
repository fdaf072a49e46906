"""Job files: the manual's example, defaults, skytools syntax, every error."""

import dataclasses
import os
import socket
import textwrap

import pytest

from cubemux.config import default_template, job_files, load_job
from cubemux.errors import ConfigError

# The "Example config file" of the cube_dispatcher(1) manual of skytools
# 2.1.13, indented as the manual prints it.
MANUAL_EXAMPLE_INDENTED = """\
           [cube_dispatcher]
           job_name          = some_queue_to_cube

           src_db            = dbname=sourcedb_test
           dst_db            = dbname=dataminedb_test

           pgq_queue_name    = udata.some_queue

           logfile           = ~/log/%(job_name)s.log
           pidfile           = ~/pid/%(job_name)s.pid

           # how many rows are kept: keep_latest, keep_all
           mode = keep_latest

           # to_char() fmt for table suffix
           #dateformat = YYYY_MM_DD
           # following disables table suffixes:
           #dateformat =

           part_template =
                create table _DEST_TABLE (like _PARENT);
                alter table only _DEST_TABLE add primary key (_PKEY);
"""

MANUAL_EXAMPLE = textwrap.dedent(MANUAL_EXAMPLE_INDENTED)

MANUAL_TEMPLATE = ("create table _DEST_TABLE (like _PARENT);\n"
                   "alter table only _DEST_TABLE add primary key (_PKEY);")

MINIMAL = """\
[cube_dispatcher]
src_db = dbname=src
dst_db = dbname=dst
pgq_queue_name = q
"""


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    return str(path)


def write(tmp_path, text, name="job.ini"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def load(tmp_path, text, name="job.ini"):
    return load_job(write(tmp_path, text, name))


def problems_of(tmp_path, text, name="job.ini"):
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as raised:
        load_job(path)
    return raised.value.problems


def only_problem(tmp_path, text):
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


# The manual's example.


def test_manual_example_values(tmp_path, home):
    job = load(tmp_path, MANUAL_EXAMPLE)
    assert job.job_name == "some_queue_to_cube"
    assert job.src_db == "dbname=sourcedb_test"
    assert job.dst_db == "dbname=dataminedb_test"
    assert job.pgq_queue_name == "udata.some_queue"
    assert job.pgq_consumer_id == "some_queue_to_cube"
    assert job.logfile == os.path.join(home, "log", "some_queue_to_cube.log")
    assert job.pidfile == os.path.join(home, "pid", "some_queue_to_cube.pid")
    assert job.mode == "keep_latest"
    assert job.dateformat == "YYYY_MM_DD"
    assert job.part_template == MANUAL_TEMPLATE


def test_manual_example_no_warnings(tmp_path, home):
    assert load(tmp_path, MANUAL_EXAMPLE).warnings == ()


def test_manual_example_indented_same(tmp_path, home):
    plain = load(tmp_path, MANUAL_EXAMPLE, "plain.ini")
    indented = load(tmp_path, MANUAL_EXAMPLE_INDENTED, "indented.ini")
    assert indented.part_template == MANUAL_TEMPLATE
    assert indented == dataclasses.replace(plain, path=indented.path)


def test_manual_example_crlf_and_bom(tmp_path, home):
    data = b"\xef\xbb\xbf" + MANUAL_EXAMPLE.replace("\n", "\r\n").encode()
    plain = load(tmp_path, MANUAL_EXAMPLE, "plain.ini")
    windows = load(tmp_path, data, "windows.ini")
    assert windows == dataclasses.replace(plain, path=windows.path)


def test_manual_example_dateformat_uncommented(tmp_path, home):
    text = MANUAL_EXAMPLE.replace("#dateformat =\n", "dateformat =\n")
    assert load(tmp_path, text).dateformat == ""


def test_manual_example_dateformat_month(tmp_path, home):
    text = MANUAL_EXAMPLE.replace("#dateformat = YYYY_MM_DD", "dateformat = YYYY_MM")
    assert load(tmp_path, text).dateformat == "YYYY_MM"


# Defaults.


def test_defaults_match_manual(tmp_path):
    job = load(tmp_path, MINIMAL, "some_job.ini")
    assert job.job_name == "some_job"
    assert job.pgq_consumer_id == "some_job"
    assert job.mode == "keep_latest"
    assert job.dateformat == "YYYY_MM_DD"
    assert job.loop_delay == 1.0
    assert job.connection_lifetime == 1200.0
    assert job.log_count == 3
    assert job.log_size == 10485760
    assert job.use_skylog is False
    assert job.logfile is None
    assert job.pidfile is None
    assert job.timezone is None
    assert job.worker_timeout == 60.0
    assert job.max_backoff == 60.0
    assert job.warnings == ()


def test_default_template_keep_latest(tmp_path):
    job = load(tmp_path, MINIMAL)
    assert job.part_template == default_template("keep_latest")
    assert "primary key (_PKEY)" in job.part_template


def test_default_template_keep_all(tmp_path):
    job = load(tmp_path, MINIMAL + "mode = keep_all\n")
    assert job.part_template == default_template("keep_all")
    assert "primary key" not in job.part_template


def test_empty_template_uses_default(tmp_path):
    job = load(tmp_path, MINIMAL + "part_template =\n")
    assert job.part_template == default_template("keep_latest")


def test_dateformat_empty_disables(tmp_path):
    assert load(tmp_path, MINIMAL + "dateformat =\n").dateformat == ""


def test_consumer_id_follows_job_name(tmp_path):
    job = load(tmp_path, MINIMAL + "job_name = cube1\n")
    assert job.pgq_consumer_id == "cube1"


def test_consumer_id_set_explicitly(tmp_path):
    job = load(tmp_path, MINIMAL + "job_name = cube1\npgq_consumer_id = other\n")
    assert job.job_name == "cube1"
    assert job.pgq_consumer_id == "other"


def test_consumer_id_interpolates_job_name(tmp_path):
    text = MINIMAL + "pgq_consumer_id = %(job_name)s_v2\n"
    assert load(tmp_path, text, "cube.ini").pgq_consumer_id == "cube_v2"


def test_logfile_empty_is_none(tmp_path):
    assert load(tmp_path, MINIMAL + "logfile =\n").logfile is None


def test_path_is_absolute(tmp_path, monkeypatch):
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    assert load_job("job.ini").path == str(tmp_path / "job.ini")


@pytest.mark.parametrize("key, text, value", [
    ("loop_delay", "0", 0.0),
    ("loop_delay", "0.25", 0.25),
    ("loop_delay", "+2", 2.0),
    ("loop_delay", "1e1", 10.0),
    ("loop_delay", ".5", 0.5),
    ("connection_lifetime", "0", 0.0),
    ("log_count", "0", 0),
    ("log_size", "1", 1),
    ("worker_timeout", "1", 1.0),
    ("max_backoff", "300", 300.0),
])
def test_number_accepted(tmp_path, key, text, value):
    job = load(tmp_path, MINIMAL + "%s = %s\n" % (key, text))
    assert getattr(job, key) == value


@pytest.mark.parametrize("text, value", [
    ("1", True), ("yes", True), ("true", True), ("on", True), ("On", True),
    ("0", False), ("no", False), ("false", False), ("off", False), ("NO", False),
])
def test_boolean_accepted(tmp_path, text, value):
    assert load(tmp_path, MINIMAL + "use_skylog = %s\n" % text).use_skylog is value


def test_timezone_set(tmp_path):
    assert load(tmp_path, MINIMAL + "timezone = UTC\n").timezone == "UTC"


# skytools (configparser) syntax.


def test_colon_delimiter(tmp_path):
    text = ("[cube_dispatcher]\nsrc_db: dbname=src\ndst_db : dbname=dst\n"
            "pgq_queue_name:q\n")
    job = load(tmp_path, text)
    assert job.src_db == "dbname=src"
    assert job.dst_db == "dbname=dst"
    assert job.pgq_queue_name == "q"


def test_semicolon_comment_lines(tmp_path):
    text = "; a job\n" + MINIMAL + ";mode = keep_all\n  ; indented\n"
    job = load(tmp_path, text)
    assert job.mode == "keep_latest"
    assert job.warnings == ()


def test_keys_case_insensitive(tmp_path):
    text = MINIMAL + "Loop_Delay = 7\nMODE = keep_all\n"
    job = load(tmp_path, text)
    assert job.loop_delay == 7.0
    assert job.mode == "keep_all"


def test_hash_in_value_kept(tmp_path):
    text = MINIMAL.replace("dbname=src", "dbname=src password=ab#c")
    assert load(tmp_path, text).src_db == "dbname=src password=ab#c"


def test_double_percent_is_percent(tmp_path):
    text = MINIMAL.replace("dbname=src", "dbname=src password=50%%off")
    assert load(tmp_path, text).src_db == "dbname=src password=50%off"


def test_percent_in_template(tmp_path):
    text = MINIMAL + ("part_template =\n  create table _DEST_TABLE (like _PARENT);\n"
                      "  comment on table _DEST_TABLE is '100%%'\n")
    assert load(tmp_path, text).part_template.endswith("is '100%'")


def test_default_section_inherited(tmp_path):
    text = "[DEFAULT]\ndst_db = dbname=dst\nmode = keep_all\n" + MINIMAL.replace(
        "dst_db = dbname=dst\n", "")
    job = load(tmp_path, text)
    assert job.dst_db == "dbname=dst"
    assert job.mode == "keep_all"
    assert job.warnings == ()


def test_section_overrides_default(tmp_path):
    text = "[DEFAULT]\nmode = keep_all\n" + MINIMAL + "mode = keep_latest\n"
    assert load(tmp_path, text).mode == "keep_latest"


def test_skytools_names_interpolated(tmp_path):
    text = MINIMAL + (
        "logfile = %(config_dir)s/%(service_name)s-%(host_name)s.log\n"
        "pidfile = %(config_file)s.pid\n")
    path = write(tmp_path, text)
    job = load_job(path)
    assert job.logfile == "%s/cube_dispatcher-%s.log" % (tmp_path, socket.gethostname())
    assert job.pidfile == path + ".pid"


def test_helper_key_referenced_silently(tmp_path):
    text = MINIMAL + "logdir = /var/log/cube\nlogfile = %(logdir)s/%(job_name)s.log\n"
    job = load(tmp_path, text)
    assert job.logfile == "/var/log/cube/job.log"
    assert job.warnings == ()


def test_percent_in_file_name(tmp_path):
    job = load(tmp_path, MINIMAL + "logfile = /tmp/%(job_name)s.log\n", "a%b.ini")
    assert job.job_name == "a%b"
    assert job.logfile == "/tmp/a%b.log"


def test_src_db_continuation_lines(tmp_path):
    text = MINIMAL.replace("src_db = dbname=src\n",
                           "src_db =\n    host=db1\n    dbname=src\n")
    assert load(tmp_path, text).src_db == "host=db1\ndbname=src"


def test_triple_quoted_template(tmp_path):
    text = MINIMAL + ("part_template = '''create table _DEST_TABLE (like _PARENT);\n"
                      "alter table only _DEST_TABLE add primary key (_PKEY);'''\n")
    assert load(tmp_path, text).part_template == MANUAL_TEMPLATE


def test_duplicate_key_last_wins(tmp_path):
    job = load(tmp_path, MINIMAL + "mode = keep_all\nmode = keep_latest\n")
    assert job.mode == "keep_latest"
    assert len(job.warnings) == 1
    assert "job.ini:6:" in job.warnings[0]
    assert "first on line 5" in job.warnings[0]


# Errors.


def test_error_wrong_mode(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "mode = keep_everything\n")
    assert problem.startswith(str(tmp_path / "job.ini") + ":5: ")
    assert "mode = 'keep_everything' is invalid" in problem
    assert "keep_latest or keep_all" in problem


def test_error_mode_case_sensitive(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "mode = Keep_All\n")
    assert "'Keep_All'" in problem


@pytest.mark.parametrize("key, expected", [
    ("loop_delay", "a number of seconds from 0 to 86400"),
    ("connection_lifetime", "a number of seconds from 0 to 31536000"),
    ("worker_timeout", "a number of seconds from 1 to 86400"),
    ("max_backoff", "a number of seconds from 1 to 86400"),
    ("log_count", "a whole number of files, 0 or more"),
    ("log_size", "a whole number of bytes, 1 or more"),
])
@pytest.mark.parametrize("text", [
    "abc", "-1", "", "nan", "inf", "1e999", "1_0", "1,5", "10M", "\u0663",
])
def test_error_bad_number(tmp_path, key, expected, text):
    problem = only_problem(tmp_path, MINIMAL + "%s = %s\n" % (key, text))
    assert problem.startswith(str(tmp_path / "job.ini") + ":5: ")
    assert "%s = %r is invalid" % (key, text) in problem
    assert "expected " + expected in problem


@pytest.mark.parametrize("key, text", [
    ("worker_timeout", "0.5"),
    ("max_backoff", "0"),
    ("log_size", "0"),
    ("log_count", "1.5"),
    ("log_size", "1e6"),
])
def test_error_number_below_minimum(tmp_path, key, text):
    problem = only_problem(tmp_path, MINIMAL + "%s = %s\n" % (key, text))
    assert "%s = %r is invalid" % (key, text) in problem


def test_error_bad_boolean(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "use_skylog = maybe\n")
    assert "use_skylog = 'maybe' is invalid" in problem
    assert "1, 0, true, false, yes, no, on or off" in problem


def test_error_inline_comment_hint(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "loop_delay = 5  # seconds\n")
    assert "loop_delay = '5  # seconds' is invalid" in problem
    assert "line of its own" in problem


@pytest.mark.parametrize("key, hint", [
    ("src_db", "connection string of the source database"),
    ("dst_db", "connection string of the destination database"),
    ("pgq_queue_name", "the name of the PgQ queue"),
])
def test_error_missing_required_key(tmp_path, key, hint):
    text = "".join(line + "\n" for line in MINIMAL.splitlines()
                   if not line.startswith(key))
    problem = only_problem(tmp_path, text)
    assert problem.startswith(str(tmp_path / "job.ini") + ": ")
    assert "[cube_dispatcher] %s is missing" % key in problem
    assert hint in problem


def test_error_missing_all_required(tmp_path):
    problems = problems_of(tmp_path, "[cube_dispatcher]\nmode = keep_all\n")
    assert len(problems) == 3


@pytest.mark.parametrize("key", ["src_db", "dst_db", "pgq_queue_name", "job_name",
                                 "pgq_consumer_id", "timezone"])
def test_error_empty_required_value(tmp_path, key):
    problem = only_problem(tmp_path, MINIMAL + "%s =\n" % key)
    assert "[cube_dispatcher] %s" % key in problem
    assert "is invalid" in problem


def test_error_missing_section(tmp_path):
    problem = only_problem(tmp_path, "[cube]\nsrc_db = x\n")
    assert problem.startswith(str(tmp_path / "job.ini") + ": ")
    assert "section [cube_dispatcher] is missing" in problem
    assert "(the file has [cube])" in problem


def test_error_empty_file(tmp_path):
    problem = only_problem(tmp_path, "")
    assert "section [cube_dispatcher] is missing" in problem


def test_error_file_not_found(tmp_path):
    path = str(tmp_path / "absent.ini")
    with pytest.raises(ConfigError) as raised:
        load_job(path)
    assert str(raised.value) == (
        "%s: cannot read the job file: No such file or directory" % path)


def test_error_file_is_folder(tmp_path):
    path = tmp_path / "folder.ini"
    path.mkdir()
    with pytest.raises(ConfigError) as raised:
        load_job(str(path))
    assert "cannot read the job file: Is a directory" in str(raised.value)


def test_error_invalid_utf8(tmp_path):
    data = MINIMAL.replace("dbname=src", "dbname=s\xe4rc").encode("latin-1")
    problem = only_problem(tmp_path, data)
    assert problem.startswith(str(tmp_path / "job.ini") + ":2: ")
    assert "not valid UTF-8 (byte 0xe4 at column 18)" in problem
    assert "save the job file as UTF-8" in problem


def test_error_invalid_utf8_with_others(tmp_path):
    data = b"[cube_dispatcher]\nsrc_db = \xff\nmode = x\n"
    problems = problems_of(tmp_path, data)
    assert len(problems) == 4
    assert ":2: the line is not valid UTF-8" in problems[0]
    assert ":3: [cube_dispatcher] mode" in problems[1]


def test_error_unknown_interpolation(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "logfile = ~/log/%(jobname)s.log\n")
    assert problem.startswith(str(tmp_path / "job.ini") + ":5: ")
    assert "[cube_dispatcher] logfile: %(jobname)s refers to key jobname" in problem
    assert "not set" in problem


def test_error_interpolation_loop(tmp_path):
    text = MINIMAL + "job_name = %(pgq_consumer_id)s\n"
    problems = problems_of(tmp_path, text)
    assert "job_name -> pgq_consumer_id -> job_name" in problems[0]


def test_error_lone_percent_hides_password(tmp_path):
    text = MINIMAL.replace("dbname=src", "dbname=src password=s3cr%t")
    problem = only_problem(tmp_path, text)
    assert "[cube_dispatcher] src_db:" in problem
    assert "write a literal % as %%" in problem
    assert "s3cr" not in problem


def test_error_broken_syntax(tmp_path):
    text = MINIMAL + "mode keep_all\n"
    problem = only_problem(tmp_path, text)
    assert problem.startswith(str(tmp_path / "job.ini") + ":5: ")
    assert "invalid line 'mode keep_all'" in problem
    assert "'key = value'" in problem


def test_error_key_above_section(tmp_path):
    problem = only_problem(tmp_path, "mode = keep_all\n" + MINIMAL)
    assert problem.startswith(str(tmp_path / "job.ini") + ":1: ")
    assert "above the first section header" in problem


def test_error_unclosed_quote(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "part_template = '''create\n")
    assert ":5: " in problem
    assert "never closed" in problem


def test_error_accidental_indentation(tmp_path):
    text = MINIMAL + "job_name = cube\n    mode = keep_all\n"
    problem = only_problem(tmp_path, text)
    assert problem.startswith(str(tmp_path / "job.ini") + ":5: ")
    assert "job_name continues on line 6" in problem
    assert "remove the indentation" in problem


def test_error_quoted_multiline_name(tmp_path):
    problem = only_problem(tmp_path, MINIMAL + "job_name = '''a\nb'''\n")
    assert "job_name spans several lines" in problem


def test_errors_reported_together(tmp_path):
    text = ("[cube_dispatcher]\n"
            "mode = newest\n"
            "loop_delay = soon\n"
            "this line is broken\n"
            "use_skylog = perhaps\n"
            "logfile = %(nowhere)s\n"
            "log_size = 10M\n")
    problems = problems_of(tmp_path, text)
    lines = [problem.split(":")[1] for problem in problems[:6]]
    assert lines == ["2", "3", "4", "5", "6", "7"]
    assert "src_db is missing" in problems[6]
    assert "dst_db is missing" in problems[7]
    assert "pgq_queue_name is missing" in problems[8]
    assert len(problems) == 9


def test_error_message_joins_problems(tmp_path):
    path = write(tmp_path, "[cube_dispatcher]\nmode = x\n")
    with pytest.raises(ConfigError) as raised:
        load_job(path)
    assert str(raised.value) == "\n".join(raised.value.problems)


# Warnings.


def test_warning_unknown_key_suggests(tmp_path):
    job = load(tmp_path, MINIMAL + "loop_dealy = 5\n")
    assert job.warnings == (
        "%s:5: [cube_dispatcher] key loop_dealy is unknown and ignored: "
        "did you mean loop_delay?" % (tmp_path / "job.ini"),)


def test_warning_unknown_key_plain(tmp_path):
    job = load(tmp_path, MINIMAL + "colour = blue\n")
    assert job.warnings[0].endswith("key colour is unknown and ignored")


def test_warning_other_section(tmp_path):
    job = load(tmp_path, MINIMAL + "[londiste]\nx = 1\n")
    assert len(job.warnings) == 1
    assert "section [londiste] is ignored" in job.warnings[0]


def test_skytools_keys_ignored_silently(tmp_path):
    text = MINIMAL + "use_syslog = 1\npgq_lazy_fetch = 500\nexception_sleep = 20\n"
    assert load(tmp_path, text).warnings == ()


@pytest.mark.parametrize("template", [
    "create table _DEST_TABLE (like _PARENT);\n"
    "  alter table only _DEST_TABLE add primary key (_PKEY)",
    "create table _DEST_TABLE (like _PARENT, PRIMARY  KEY (id))",
    "create table _DEST_TABLE (like _PARENT);\n"
    "  create unique index on _DEST_TABLE (id)",
])
def test_warning_keep_all_unique(tmp_path, template):
    text = MINIMAL + "mode = keep_all\npart_template = %s\n" % template
    job = load(tmp_path, text)
    assert len(job.warnings) == 1
    assert "primary key or unique constraint" in job.warnings[0]
    assert "mode = keep_latest" in job.warnings[0]


def test_warning_keep_all_copied_indexes(tmp_path):
    text = MINIMAL + ("mode = keep_all\n"
                      "part_template = create table _DEST_TABLE (like _PARENT "
                      "including all)\n")
    job = load(tmp_path, text)
    assert len(job.warnings) == 1
    assert "copies the parent's indexes" in job.warnings[0]


def test_no_warning_unique_column_name(tmp_path):
    text = MINIMAL + ("mode = keep_all\npart_template = create table _DEST_TABLE "
                      "(like _PARENT); create index on _DEST_TABLE (unique_id)\n")
    assert load(tmp_path, text).warnings == ()


def test_no_warning_keep_latest_primary_key(tmp_path, home):
    assert load(tmp_path, MANUAL_EXAMPLE).warnings == ()


# Job folders.


def test_job_files_skip_leftovers(tmp_path):
    for name in ["b.ini", "a.ini", "a.ini~", ".a.ini", ".a.ini.swp", "#a.ini#",
                 ".#a.ini", "a.ini.bak", "notes.txt", "c.ini.orig"]:
        (tmp_path / name).write_text(MINIMAL)
    assert job_files(str(tmp_path)) == [str(tmp_path / "a.ini"),
                                        str(tmp_path / "b.ini")]


def test_job_files_skip_folders(tmp_path):
    (tmp_path / "sub.ini").mkdir()
    assert job_files(str(tmp_path)) == []


def test_job_files_keep_broken_link(tmp_path):
    os.symlink(str(tmp_path / "gone"), str(tmp_path / "broken.ini"))
    assert job_files(str(tmp_path)) == [str(tmp_path / "broken.ini")]
