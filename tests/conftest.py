"""Shared fixtures, loaded as pytest plugins from ``tests/fixtures/``: test modules use them by name, never import them.

- ``tests.fixtures.gateway``: ``gateway`` (an embedded gateway process);
- ``tests.fixtures.redis``: ``redis_server``, ``redis_server_session``, ``redis_server_factory``;
- ``tests.fixtures.auth``: ``oidc_server``, ``provider`` (it posing as the public Entra ID authority);
  ``tls`` and ``idp`` (module scope: the provider over https);
- ``tests.fixtures.conformance``: ``conformance_server``, ``example_server`` (module scope);
- ``tests.fixtures.kubernetes``: ``cluster`` (the API emulator), ``kubeconfig``, ``runtime`` (a KubernetesRuntime);
  ``k8s`` (emulator + test kubelet on a thread), ``k8s_gateway`` (a gateway process in kubernetes mode);
- ``tests.fixtures.local_runtime``: ``test_catalog``, ``make_runtime``.

Modules without fixtures (``tests.fixtures.cosmos``, ``telemetry``, ``tls``, ``mcp1_client``) are imported
where used. Layout: tests/LAYOUT.md.
"""

pytest_plugins = [
    "tests.fixtures.gateway",
    "tests.fixtures.redis",
    "tests.fixtures.auth",
    "tests.fixtures.conformance",
    "tests.fixtures.kubernetes",
    "tests.fixtures.local_runtime",
]
