"""Random bytes as a job file: a ConfigError or a job, never another exception."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cubemux.config import load_job
from cubemux.errors import ConfigError

_LINES = st.lists(st.one_of(
    st.text(max_size=40),
    st.sampled_from(["[cube_dispatcher]", "src_db = dbname=a", "dst_db = dbname=b",
                     "pgq_queue_name = q", "mode = keep_all", "  continued",
                     "dateformat = %(job_name)s", "period = day", "part_mode = x",
                     "retention_period = 3 months", "fields = a:b, c",
                     "[DEFAULT]", "key: value", "; comment", "%%", "=", "[", "]"]),
), max_size=12)


@settings(max_examples=300, deadline=None)
@given(content=st.one_of(st.binary(max_size=300),
                         _LINES.map(lambda lines: "\n".join(lines).encode())))
def test_job_file_garbage_gives_config_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "job.ini"
    path.write_bytes(content)
    try:
        job = load_job(str(path))
    except ConfigError as error:
        assert str(path) in str(error)
        return
    assert job.src_db
    assert job.dst_db
    assert job.pgq_queue_name
