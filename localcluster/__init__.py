"""localcluster: a Kubernetes API server and runtime on loopback for development and tests.

``python -m localcluster --host 127.0.0.1 --port P --nodes N --state-dir DIR --kubeconfig FILE``
serves the REST API (``server.py``) over the object store (``store.py``) and starts the
runtime (``runtime.py``: nodes, scheduler, controllers, kubelets) in the same process.

API layer modules:

* ``store``: objects, the global resourceVersion, the in-process async API the runtime
  uses; ``records``, ``persistence``, ``watching`` and ``deletion`` hold its parts.
* ``server``: URL routing and verbs; ``watchapi`` (watch streams), ``scaleapi``,
  ``podapi`` (log, eviction, binding), ``tables`` (kubectl's server-side printing),
  ``discovery`` and ``openapi`` (what kubectl reads first), ``protobuf`` (kubectl's
  protobuf request bodies), ``query``.
* ``schema`` (decoding against the official client's models), ``validation``
  (defaults and 422s), ``patch`` (strategic merge, merge and JSON patches),
  ``selectors``, ``resources`` (the served kinds), ``errors`` (Status bodies).
* ``gc``: owner references, deletion finalizers, namespace termination, default
  ServiceAccounts.
* ``auth`` (bearer tokens, the Host check) and ``tls`` (the state dir's CA, the server
  certificate): the API is served over https to token holders only, since a pod is a
  host process; ``private_files`` writes the token, CA and kubeconfig readable by
  their owner only.
"""
