"""The index's write side in domain terms, pure (no boto3, no sqlite3).

* :mod:`records`: what the index is given and answers (an instance record, the outcomes,
  an entry that names its object, a change of the change log);
* :mod:`order`: the sort keys both backends order studies and instances by;
* :mod:`writes`: what one change (an instance added, removed or replaced) writes, computed
  once from what the index holds; each backend persists it (``adapters/sqlite_index``,
  ``adapters/dynamo_index``, the in-memory fake of the tests) without re-deriving it.
"""
