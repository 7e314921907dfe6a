"""Where grains' state lives: the storage and directory Protocols (``protocols``), grain
state in Redis with compare-and-set (``redis_state``), the JSON rules for state
(``state_codec``), the in-memory twins for tests (``memory``), the connection pool that
survives store restarts (``pool``), key names (``keys``) and the embedded store process
(``embedded``)."""
