"""The identity graph (``identity="graph"``): who is who, as connected components.

The rules (docs/identity.md has them with examples; ``tests/reference.py`` has them as a
union-find):

1. Identifiers are the non-blank userIds, anonymousIds and alias ``previousId`` values
   of valid events, in one namespace (as the per-event rule already treats them).
2. Links: every event carrying both ids links its anonymousId to its userId (a *device
   link*); an ``alias`` call links its previousId to its userId (an *alias link*).
3. Alias links are explicit statements that two ids are one person; they are always
   used, and the ids they join count as one *person* under the cap.
4. An anonymousId whose device links reach more people than ``cap`` (itself included when
   it is a userId or aliased) is a *shared device*: its device links are not used.
5. Components are taken over alias links and the remaining device links. Where a component
   still holds more than ``cap`` people (chains of devices, possible when ``cap`` >= 2),
   none of its devices that reach two or more people is used (``component_cap``), and the
   components are taken again, until none does.
6. A component resolves to its representative: the userId in it seen first (the time of
   its earliest event), ties by the smaller id. An event resolves through its key
   (userId, else anonymousId): the representative of the key's component; a shared device
   without a user in its component gives its anonymous events to its latest
   identification (as ``identity="stitch"``), resolved through that user's component.

Components are found by label propagation in SQL, driven from Python: each node starts
with the smallest id among itself and its neighbours; a round takes the smallest label
among a node's neighbours, then jumps to its label's label (pointer jumping: a chain of n
links needs about log n rounds, not n). Rounds repeat until no label changes. Most
devices are leaves (one link to one user, nothing else); they take their user's label
afterwards instead of riding along in every round, so the rounds see only the few
identifiers that actually chain (aliases, devices linking several ids). The
statements are DuckDB SQL; a runner executes them on the engine at hand: DuckDB tables,
or Spark views checkpointed every round so that plans do not grow with the rounds.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["DuckDBRunner", "Runner", "SparkRunner", "build_identities", "identities_sql"]

P = "__sz_"
PAIRS = "sz_graph_pairs"        # (uid, aid, prev): events, first time, latest identification
IDS = "sz_graph_ids"            # one row per identifier: is it a user, an anonymousId, ...
ALIAS = "sz_graph_alias"        # alias links, both directions
DEVICES = "sz_graph_devices"    # device links (aid, uid) with the user's person
REACH = "sz_graph_reach"        # per anonymousId: how many people its links reach
CAPPED = "sz_graph_capped"      # anonymousIds whose device links are not used, and why
LEAVES = "sz_graph_leaves"      # devices with one link and nothing else: labelled, not propagated
EDGES = "sz_graph_edges"        # the other links used, both directions
LABELS = "sz_graph_components"  # every linked identifier -> its component
OVER = "sz_graph_over"          # components holding more people than the cap
NODES = "sz_graph_nodes"        # the outcome: identifier -> component, resolved user, rule
#: The most label-propagation rounds before giving up (a safety net: rounds are about
#: log2 of the longest chain, so this is never reached by a real graph).
MAX_ROUNDS = 200


class Runner(Protocol):
    """What the driver needs from an engine: materialise SQL as a table, read rows."""

    def create(self, name: str, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple]: ...

    def drop(self, name: str) -> None: ...


class DuckDBRunner:
    """Runs the driver's statements as DuckDB tables."""

    def __init__(self, con: Any):
        self.con = con

    def create(self, name: str, sql: str) -> None:
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS {sql}")

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql).fetchall()

    def drop(self, name: str) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {name}")


class SparkRunner:
    """Runs the driver's statements on a :class:`~sessionize.engines.spark.SparkEngine`.

    Each table is checkpointed (``localCheckpoint``): the next round reads data, not the
    plan of every round before it.
    """

    def __init__(self, engine: Any):
        self.engine = engine

    def create(self, name: str, sql: str) -> None:
        frame = self.engine.sql(sql).localCheckpoint(eager=True)
        self.engine._register(name.removeprefix("sz_"), frame)

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(row) for row in self.engine.sql(sql).collect()]

    def drop(self, name: str) -> None:
        self.engine.spark.catalog.dropTempView(self.engine.view(name.removeprefix("sz_")))


def build_identities(runner: Runner, compiled: Any) -> None:
    """Create ``sz_identities`` (and, for the graph, ``sz_graph_nodes`` before it)."""
    if compiled.identity == "graph":
        build_graph(runner, compiled.identity_cap)
    runner.create("sz_identities", compiled.sql("identities"))


def identities_sql() -> str:
    """The graph's ``identities`` stage: the outcome's four public columns."""
    return f"SELECT identifier, resolved_user, rule, user_ids FROM {NODES}"


# -- the driver ----------------------------------------------------------------------------
def build_graph(runner: Runner, cap: int) -> None:
    """Run every step of the graph, leaving ``sz_graph_nodes``; helper tables are dropped."""
    runner.create(PAIRS, pairs_sql())
    runner.create(IDS, ids_sql())
    runner.create(ALIAS, alias_links_sql())
    people = propagate(runner, ALIAS, "sz_graph_people")
    runner.create(DEVICES, devices_sql(people))
    runner.create(REACH, reach_sql(people))
    runner.create(CAPPED, shared_devices_sql(cap))
    while True:
        runner.create(LEAVES, leaves_sql())
        runner.create(EDGES, edges_sql())
        core = propagate(runner, EDGES, "sz_graph_labels")
        runner.create(LABELS, components_sql(core))
        runner.create(OVER, over_cap_sql(LABELS, people, cap))
        if not runner.rows(f"SELECT count(*) FROM {OVER}")[0][0]:
            break
        runner.create(CAPPED + "_next", component_cap_sql(LABELS))
        runner.create(CAPPED, f"SELECT aid, rule FROM {CAPPED}_next")
    runner.create(NODES, nodes_sql(LABELS))
    for name in (PAIRS, IDS, ALIAS, DEVICES, REACH, CAPPED, CAPPED + "_next", LEAVES, EDGES,
                 LABELS, OVER, *_pair(people), *_pair(core)):
        runner.drop(name)


def _pair(labels: str) -> tuple[str, str]:
    base = labels.rsplit("_", 1)[0]
    return f"{base}_a", f"{base}_b"


def propagate(runner: Runner, edges: str, base: str) -> str:
    """Label every node of ``edges`` with the smallest node of its component; returns
    the table holding the labels (``<base>_a`` or ``<base>_b``)."""
    current, spare = f"{base}_a", f"{base}_b"
    runner.create(current, first_labels_sql(edges))
    for _ in range(MAX_ROUNDS):
        runner.create(spare, round_sql(edges, current))
        current, spare = spare, current
        if not runner.rows(f"SELECT count(*) FROM {current} WHERE changed")[0][0]:
            return current
    raise RuntimeError(f"identity graph: labels still changing after {MAX_ROUNDS} rounds; "
                       "please report this")


def identification_key(ts: str = f"EPOCH_US({P}ts)", msg: str = f"{P}msg",
                       row: str = f"{P}row") -> str:
    """The order of identifications, the events' own (time, messageId with missing last,
    input order), as a struct without NULLs: engines disagree on where a NULL field sorts.
    """
    return (f"struct_pack(t := {ts}, n := {msg} IS NULL, m := coalesce({msg}, ''), "
            f"r := {row})")


# -- the statements ------------------------------------------------------------------------
def pairs_sql() -> str:
    """The valid events grouped by (userId, anonymousId, alias previousId): one pass over
    the events; everything after reads this much smaller table."""
    return f"""
        SELECT uid, aid, prev, count(*) AS events, min(ts_us) AS first_us,
            max({identification_key('ts_us', 'msg', 'input_row')})
                FILTER (WHERE uid IS NOT NULL AND aid IS NOT NULL) AS last_key
        FROM (
            SELECT {P}uid AS uid, {P}aid AS aid,
                CASE WHEN {P}alias AND {P}uid IS NOT NULL AND {P}prev_id <> {P}uid
                    THEN {P}prev_id END AS prev,
                EPOCH_US({P}ts) AS ts_us, {P}msg AS msg, {P}row AS input_row
            FROM sz_prepared WHERE {P}invalid IS NULL
        ) AS v
        GROUP BY uid, aid, prev
    """


def ids_sql() -> str:
    """One row per identifier: whether it is a userId (and when it was first seen), an
    anonymousId (and with how many userIds), and how many events it is the key of."""
    return f"""
        SELECT id,
            max(CASE WHEN role = 'u' THEN 1 ELSE 0 END) = 1 AS is_user,
            max(CASE WHEN role = 'a' THEN 1 ELSE 0 END) = 1 AS anonymous,
            min(first_us) AS first_us,
            sum(events) AS events,
            count(DISTINCT other) AS user_ids
        FROM (
            SELECT uid AS id, 'u' AS role, CAST(NULL AS VARCHAR) AS other, first_us, events
            FROM {PAIRS} WHERE uid IS NOT NULL
            UNION ALL
            SELECT aid AS id, 'a' AS role, uid AS other, CAST(NULL AS BIGINT) AS first_us,
                CASE WHEN uid IS NULL THEN events ELSE 0 END AS events
            FROM {PAIRS} WHERE aid IS NOT NULL
        ) AS x
        GROUP BY id
    """


def alias_links_sql() -> str:
    """Alias links (previousId, userId), both directions."""
    return f"""
        SELECT DISTINCT a, b FROM (
            SELECT prev AS a, uid AS b FROM {PAIRS} WHERE prev IS NOT NULL
            UNION ALL
            SELECT uid AS a, prev AS b FROM {PAIRS} WHERE prev IS NOT NULL
        ) AS x
    """


def first_labels_sql(edges: str) -> str:
    """Every node's first label: the smallest of itself and its neighbours."""
    return f"SELECT a AS node, least(a, min(b)) AS label, true AS changed FROM {edges} GROUP BY a"


def round_sql(edges: str, labels: str) -> str:
    """One round: the smallest label among a node and its neighbours (``hop``), then the
    hop of that label's node (pointer jumping); ``changed`` marks nodes whose label moved.

    Labels only ever decrease and are always a node of the same component, so the rounds
    end, and they end with every node labelled by its component's smallest node.
    """
    return f"""
        WITH hop AS (
            SELECT node, min(label) AS label, max(old) AS old FROM (
                SELECT node, label, label AS old FROM {labels}
                UNION ALL
                SELECT e.a AS node, l.label, CAST(NULL AS VARCHAR) AS old
                FROM {edges} AS e JOIN {labels} AS l ON l.node = e.b
            ) AS x
            GROUP BY node
        )
        SELECT h.node, least(h.label, j.label) AS label, least(h.label, j.label) <> h.old
            AS changed
        FROM hop AS h JOIN hop AS j ON j.node = h.label
    """


def devices_sql(people: str) -> str:
    """Device links (anonymousId, userId), each with the user's person (alias group)."""
    return f"""
        SELECT d.aid, d.uid, coalesce(p.label, d.uid) AS person
        FROM (SELECT DISTINCT aid, uid FROM {PAIRS}
              WHERE aid IS NOT NULL AND uid IS NOT NULL AND aid <> uid) AS d
        LEFT JOIN {people} AS p ON p.node = d.uid
    """


def reach_sql(people: str) -> str:
    """How many people each linked anonymousId reaches: its users' persons, and its own
    when it is itself a userId or aliased."""
    return f"""
        SELECT aid, count(DISTINCT person) AS people FROM (
            SELECT aid, person FROM {DEVICES}
            UNION ALL
            SELECT s.aid, coalesce(p.label, s.aid) AS person
            FROM (SELECT DISTINCT aid FROM {DEVICES}) AS s
            LEFT JOIN {people} AS p ON p.node = s.aid
            LEFT JOIN {IDS} AS i ON i.id = s.aid
            WHERE p.node IS NOT NULL OR i.is_user
        ) AS x
        GROUP BY aid
    """


def shared_devices_sql(cap: int) -> str:
    """AnonymousIds reaching more people than the cap: shared devices."""
    return f"SELECT aid, 'shared_device' AS rule FROM {REACH} WHERE people > {int(cap)}"


def leaves_sql() -> str:
    """Devices not capped with exactly one link and no other role (not a userId, not
    aliased): their component is their user's, so they need no propagation."""
    return f"""
        SELECT d.aid, min(d.uid) AS uid
        FROM {DEVICES} AS d
        LEFT JOIN {CAPPED} AS c ON c.aid = d.aid
        LEFT JOIN {IDS} AS i ON i.id = d.aid
        LEFT JOIN (SELECT DISTINCT a FROM {ALIAS}) AS al ON al.a = d.aid
        WHERE c.aid IS NULL AND al.a IS NULL AND NOT coalesce(i.is_user, false)
        GROUP BY d.aid
        HAVING count(*) = 1
    """


def edges_sql() -> str:
    """The links that propagate: every alias link, and the device links of devices
    neither capped nor leaves."""
    kept = (f"FROM {DEVICES} AS d LEFT JOIN {CAPPED} AS c ON c.aid = d.aid "
            f"LEFT JOIN {LEAVES} AS f ON f.aid = d.aid WHERE c.aid IS NULL AND f.aid IS NULL")
    return f"""
        SELECT a, b FROM {ALIAS}
        UNION ALL
        SELECT d.aid AS a, d.uid AS b {kept}
        UNION ALL
        SELECT d.uid AS a, d.aid AS b {kept}
    """


def components_sql(core: str) -> str:
    """Every linked identifier's component: the propagated labels, each leaf with its
    user's label, and users linked by leaves only, on their own."""
    return f"""
        SELECT node, label FROM {core}
        UNION ALL
        SELECT f.aid AS node, coalesce(c.label, f.uid) AS label
        FROM {LEAVES} AS f LEFT JOIN {core} AS c ON c.node = f.uid
        UNION ALL
        SELECT DISTINCT f.uid AS node, f.uid AS label
        FROM {LEAVES} AS f LEFT JOIN {core} AS c ON c.node = f.uid
        WHERE c.node IS NULL
    """


def over_cap_sql(labels: str, people: str, cap: int) -> str:
    """Components whose userIds belong to more people than the cap."""
    return f"""
        SELECT l.label AS component
        FROM {labels} AS l
        JOIN {IDS} AS i ON i.id = l.node
        LEFT JOIN {people} AS p ON p.node = l.node
        WHERE i.is_user
        GROUP BY l.label
        HAVING count(DISTINCT coalesce(p.label, l.node)) > {int(cap)}
    """


def component_cap_sql(labels: str) -> str:
    """The capped devices, plus every device of an over-cap component that reaches two or
    more people (one that reaches one person cannot have merged anyone)."""
    return f"""
        SELECT aid, rule FROM {CAPPED}
        UNION ALL
        SELECT r.aid, 'component_cap' AS rule
        FROM {REACH} AS r
        JOIN {labels} AS l ON l.node = r.aid
        JOIN {OVER} AS o ON o.component = l.label
        LEFT JOIN {CAPPED} AS c ON c.aid = r.aid
        WHERE c.aid IS NULL AND r.people >= 2
    """


def nodes_sql(labels: str) -> str:
    """The outcome, one row per identifier that is linked or capped: its component, the
    user it resolves to, the rule that decided it, and what the diagnostics count."""
    return f"""
        WITH members AS (
            SELECT node AS identifier, label AS component FROM {labels}
            UNION ALL
            SELECT c.aid AS identifier, c.aid AS component
            FROM {CAPPED} AS c LEFT JOIN {labels} AS l ON l.node = c.aid
            WHERE l.node IS NULL
        ),
        reps AS (
            SELECT m.component,
                arg_min(m.identifier, struct_pack(f := i.first_us, i := m.identifier)) AS rep
            FROM members AS m JOIN {IDS} AS i ON i.id = m.identifier
            WHERE i.is_user
            GROUP BY m.component
        ),
        latest AS (
            SELECT p.aid, arg_max(p.uid, p.last_key) AS uid
            FROM {PAIRS} AS p JOIN {CAPPED} AS c ON c.aid = p.aid
            WHERE p.uid IS NOT NULL
            GROUP BY p.aid
        )
        SELECT m.identifier, m.component,
            coalesce(r.rep, lr.rep, la.uid) AS resolved_user,
            CASE WHEN r.rep IS NOT NULL THEN 'component' ELSE c.rule END AS rule,
            coalesce(i.user_ids, 0) AS user_ids,
            coalesce(i.is_user, false) AS is_user,
            coalesce(i.anonymous, false) AS anonymous,
            c.aid IS NOT NULL AS capped,
            coalesce(i.events, 0) AS events
        FROM members AS m
        LEFT JOIN reps AS r ON r.component = m.component
        LEFT JOIN {CAPPED} AS c ON c.aid = m.identifier
        LEFT JOIN latest AS la ON la.aid = m.identifier
        LEFT JOIN {labels} AS ll ON ll.node = la.uid
        LEFT JOIN reps AS lr ON lr.component = ll.label
        LEFT JOIN {IDS} AS i ON i.id = m.identifier
    """


# -- diagnostics ---------------------------------------------------------------------------
def diagnostics(query: Any, policy: str, cap: int) -> dict[str, Any]:
    """What identity resolution did, from the run's tables (``query``: SQL -> rows).

    Anonymous ids stitched (resolved to a user other than themselves), events
    re-attributed (resolved otherwise than by the notebook's per-event rule), shared
    devices (``stitch``/``first``: anonymous ids seen with several userIds; ``graph``:
    anonymous ids not used to merge because of the cap), users seen on three or more
    devices, the ten users with most devices, and components: each resolved user with
    every identifier resolved to it (the ten largest, and how many there are of each size).
    """
    out = (_graph_counts if policy == "graph" else _stitch_counts)(query)
    members = (f"SELECT component, resolved_user, is_user, anonymous FROM {NODES} "
               "WHERE rule = 'component'") if policy == "graph" else (
        "SELECT resolved_user AS component, resolved_user, false AS is_user, "
        "true AS anonymous FROM sz_identities")
    extra = 0 if policy == "graph" else 1  # stitch: the user itself is not a row
    sizes = query(
        f"SELECT n + {extra}, count(*) FROM (SELECT component, count(*) AS n FROM ({members}) "
        "AS m GROUP BY component) AS s GROUP BY n ORDER BY n")
    largest = query(
        f"SELECT resolved_user, count(*) + {extra} AS n, "
        f"sum(CASE WHEN is_user THEN 1 ELSE 0 END) + {extra}, "
        f"sum(CASE WHEN anonymous THEN 1 ELSE 0 END) FROM ({members}) AS m "
        "GROUP BY component, resolved_user ORDER BY n DESC, resolved_user LIMIT 10")
    out["component_sizes"] = {int(size): int(count) for size, count in sizes}
    out["largest_components"] = [
        {"resolved_user": user, "identifiers": int(n), "user_ids": int(users),
         "anonymous_ids": int(anons)} for user, n, users, anons in largest]
    out["policy"], out["identity_cap"] = policy, cap
    return out


def _stitch_counts(query: Any) -> dict[str, Any]:
    stitched, shared = query(
        "SELECT count(*), count(*) FILTER (WHERE user_ids > 1) FROM sz_identities")[0]
    moved = query(
        "SELECT count(*) FROM sz_prepared AS p JOIN sz_identities AS m "
        "ON m.identifier = p.__sz_aid WHERE p.__sz_uid IS NULL AND p.__sz_invalid IS NULL"
    )[0][0]
    return {"anonymous_ids_stitched": stitched, "events_reattributed": moved,
            "shared_devices": shared,
            **_devices(query, "SELECT identifier, resolved_user FROM sz_identities")}


def _graph_counts(query: Any) -> dict[str, Any]:
    stitched, moved, shared = query(
        "SELECT count(*) FILTER (WHERE anonymous AND resolved_user <> identifier), "
        "coalesce(sum(CASE WHEN resolved_user <> identifier THEN events ELSE 0 END), 0), "
        f"count(*) FILTER (WHERE capped) FROM {NODES}")[0]
    return {"anonymous_ids_stitched": stitched, "events_reattributed": int(moved),
            "shared_devices": shared,
            **_devices(query, f"SELECT identifier, resolved_user FROM {NODES} "
                              "WHERE anonymous AND resolved_user <> identifier")}


def _devices(query: Any, stitched: str) -> dict[str, Any]:
    """Users by how many anonymous ids resolve to them."""
    per_user = f"SELECT resolved_user, count(*) AS n FROM ({stitched}) AS s GROUP BY resolved_user"
    many = query(f"SELECT count(*) FROM ({per_user}) AS d WHERE n >= 3")[0][0]
    top = [tuple(row) for row in query(f"{per_user} ORDER BY n DESC, resolved_user LIMIT 10")]
    return {"users_on_3_or_more_devices": many, "most_devices": top}


def summary_lines(d: dict[str, Any]) -> list[str]:
    """The identity lines of a run's summary."""
    if d["policy"] == "graph":
        cap = d["identity_cap"]
        shared = (f"{d['shared_devices']:,} shared devices (seen with more than {cap} "
                  f"{'person' if cap == 1 else 'people'}: not merged)")
    else:
        shared = (f"{d['shared_devices']:,} shared devices (anonymous ids seen with several "
                  "userIds)")
    lines = [f"identity: {d['anonymous_ids_stitched']:,} anonymous ids stitched, "
             f"{d['events_reattributed']:,} events re-attributed, {shared}, "
             f"{d['users_on_3_or_more_devices']:,} users on 3+ devices"]
    sizes = d["component_sizes"]
    if sizes:
        shown = ", ".join(f"{size} ids: {count:,}" for size, count in list(sizes.items())[-4:])
        largest = "; ".join(
            f"{c['resolved_user']} with {c['identifiers']} ids ({c['user_ids']} userIds, "
            f"{c['anonymous_ids']} anonymousIds)" for c in d["largest_components"][:3])
        lines.append(f"identity components: {sum(sizes.values()):,} ({shown}); "
                     f"largest: {largest}")
    return lines
