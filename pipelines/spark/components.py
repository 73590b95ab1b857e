"""Connected components on Spark DataFrames: alternating large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): both operations keep
the graph's components and shrink every component towards a star around its smallest node, in
O(log^2 n) rounds. Edges never come to the driver; each round is a few group-bys and joins, and
its result is checkpointed so the plan (and the lineage a lost partition would replay) stays one
round long instead of growing with every iteration.

Node ids may be any orderable column type (strings, longs); the label is the smallest node.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, Observation, Window
from pyspark.sql import functions as F

MAX_ROUNDS = 64  # a chain of 10^9 nodes needs well under 64 rounds; more means a bug


def connected_components(edges: DataFrame, src: str = "src", dst: str = "dst",
                         max_rounds: int = MAX_ROUNDS) -> tuple[DataFrame, int]:
    """(DataFrame[node, label], rounds) for every node on an edge; label = min node of its component.

    Nodes without edges are not listed: a singleton is its own component.
    """
    # Oriented edge set: each edge (u, v) has v < u, i.e. v is a candidate parent of u.
    e = (edges.where(F.col(src) != F.col(dst))
         .select(F.greatest(src, dst).alias("src"), F.least(src, dst).alias("dst"))
         .distinct())
    e = _cut(e)
    if e.isEmpty():  # (an observation over an empty plan has no metrics row to read)
        return e.select(F.col("src").alias("node"), F.col("dst").alias("label")), 0
    rounds = 0
    while True:
        rounds += 1
        # The convergence test rides along with the round's own job (no extra Spark job): the
        # large-star step sees every node's degree and smallest neighbour anyway.
        check = Observation(f"connected-components-round-{rounds}")
        e = _cut(_small_star(_large_star(e, check)))
        if not check.get.get("not_star"):
            break  # the round's input was already a star forest, so its output is the same one
        if rounds >= max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
    children = e.select(F.col("src").alias("node"), F.col("dst").alias("label"))
    roots = e.select(F.col("dst").alias("node"), F.col("dst").alias("label")).distinct()
    return children.unionByName(roots), rounds


def _large_star(e: DataFrame, check: Observation) -> DataFrame:
    """Every node u hands its larger neighbours to m(u) = min(N(u) ∪ {u}).

    A window (one shuffle by node) instead of group-by + join back (two); duplicates it makes
    are removed after the small-star step.

    `check` observes how many nodes have a smaller neighbour and more than one neighbour. With
    every edge pointing to its smaller end, zero such nodes means a star forest: each child has
    exactly one neighbour (its parent) and no parent has a smaller neighbour (a parent of its
    own). Each star is then a whole component around its minimum, and the algorithm is done.
    """
    sym = e.select(F.col("src").alias("a"), F.col("dst").alias("b")).unionByName(
        e.select(F.col("dst").alias("a"), F.col("src").alias("b")))
    by_node = Window.partitionBy("a")
    with_min = (sym.withColumn("mb", F.min("b").over(by_node))
                .withColumn("degree", F.count("b").over(by_node))
                .observe(check, F.coalesce(F.sum(F.when(
                    (F.col("mb") < F.col("a")) & (F.col("degree") > 1), 1).otherwise(0)),
                    F.lit(0)).alias("not_star")))
    return (with_min.where(F.col("b") > F.col("a"))
            .select(F.col("b").alias("src"), F.least("a", "mb").alias("dst")))


def _small_star(e: DataFrame) -> DataFrame:
    """Every node u links itself and its smaller neighbours to m = the smallest of them."""
    m = F.min("dst").over(Window.partitionBy("src"))
    linked = e.withColumn("m", m).select(F.explode(F.array(
        F.struct(F.col("dst").alias("src"), F.col("m").alias("dst")),
        F.struct(F.col("src").alias("src"), F.col("m").alias("dst")))).alias("e"))
    return linked.select("e.src", "e.dst").where(F.col("src") != F.col("dst")).distinct()


def _cut(df: DataFrame) -> DataFrame:
    """Materialize and drop the lineage (works in classic Spark and Spark Connect >= 4.0)."""
    return df.localCheckpoint(eager=True)
