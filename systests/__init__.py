"""System tests: testnets brought up and checked through the driver's public API
(`harness.driver`) and the pytest plugin (`harness.pytest_plugin`) only, so that they run
unchanged on every backend (the import-linter contracts in pyproject.toml check it)."""
