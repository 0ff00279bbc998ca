"""The standalone query (``sessionize.to_sql(dialect="spark")``) run through ``spark.sql``
equals the Spark engine's tables on the same events: the seed, and every fixture case.

The events are the Spark engine's own input DataFrame (as it read them, with its input
order as ``input_order``), registered as a temporary view named as the query's source.
The seed runs always; the fixture cases are ``slow`` (a Spark job per table, seconds each;
``--runslow`` or ``SESSIONIZE_RUNSLOW=1``, which CI exports).
"""

from __future__ import annotations

import json

import pytest
from test_cases import CASES
from test_spark import SPARK_TESTS

import sessionize
from sessionize import OptionError
from sessionize.sql.standalone import standalone_sql

pytestmark = SPARK_TESTS
TABLES = ("events", "sessions", "users")


@pytest.fixture(scope="module")
def spark():
    from sessionize.engines.spark import spark_session

    session = spark_session("local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


def rows(frame) -> list[dict]:
    from sessionize.engines.spark import _normalise_arrow

    return _normalise_arrow(frame.toArrow()).to_pylist()


def declared(kind) -> str:
    """A Spark type declared as DuckDB spells it, structs with their fields."""
    from pyspark.sql import types as T

    from sessionize.engines.spark import _duckdb_type

    if isinstance(kind, T.StructType):
        fields = ", ".join(f'"{f.name}" {declared(f.dataType)}' for f in kind.fields)
        return f"STRUCT({fields})"
    return _duckdb_type(kind)


def engine_and_query(spark, source, **options) -> tuple[dict, dict]:
    """The Spark engine's tables, and the standalone query's on the engine's input."""
    rules = sessionize.Rules.from_options(**options)
    with sessionize.run(source, engine="spark", spark=spark, on_invalid="quarantine",
                        **options) as result:
        want = {t: getattr(result, t).to_arrow().to_pylist() for t in TABLES}
        frame = result.events._engine.frames["input"]  # the engine's input, as it read it
        schema = {f.name: declared(f.dataType) for f in frame.schema.fields
                  if f.name != "__sz_row"}
        frame.withColumnRenamed("__sz_row", "input_order").createOrReplaceTempView("src")
        got = {}
        for table in TABLES:
            query = standalone_sql(rules, dialect="spark", source="src", table=table,
                                   schema=schema, order_by="input_order")
            got[table] = rows(spark.sql(query))
    spark.catalog.dropTempView("src")
    return got, want


def test_seed_through_spark_sql_equals_the_spark_engine(spark):
    got, want = engine_and_query(spark, sessionize.sample_path())
    for table in TABLES:
        assert got[table] == want[table], table
    assert len(want["sessions"]) == 4


#: Every other fixture case (CI's time budget; the rules they hold are all covered by the
#: snapshot and DuckDB tests of the same query).
SPARK_CASES = CASES[::2]


@pytest.mark.slow
@pytest.mark.parametrize("path", SPARK_CASES, ids=[p.stem for p in SPARK_CASES])
def test_fixture_case_through_spark_sql_equals_the_spark_engine(spark, path, tmp_path):
    case = json.loads(path.read_text())
    source = tmp_path / "events.json"
    source.write_text(json.dumps(case["events"]))
    options = case.get("options", {})
    if sessionize.Rules.from_options(**options).identity == "graph":
        with pytest.raises(OptionError, match="identity='graph'.*one spark query"):
            engine_and_query(spark, str(source), **options)
        return
    got, want = engine_and_query(spark, str(source), **options)
    for table in TABLES:
        assert got[table] == want[table], f"{path.stem}: {table}"
