"""The scoring pipeline: shards in, scored shards out, one done-marker each, run by an executor (local or Ray)."""
