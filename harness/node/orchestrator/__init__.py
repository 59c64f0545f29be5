"""The orchestrator: supervises a node's programs as the registry says, like the IC's.

It runs the replica while the node is a member of a subnet (at the subnet's replica version;
a new version or a new subnet restarts it), the ic-gateway side-car beside it on cloud-engine
subnets when the launch gate is on (`--enable-ic-gateway` or the node feature `ic_gateway` in
the registry), and ic-boundary while the node is an API boundary node. Programs run in their own
process groups; stopping is SIGTERM, then SIGKILL after `--stop-grace-period`; crash loops back
off; a restarted orchestrator first stops what its predecessor left behind.

Modules: `args` (flags → `OrchestratorConfig`), `states` (the `ProcessState` machine),
`process` (the `Process` abstraction), `processes` (the three programs), `runner` (spawning,
stopping, reaping), `manager` (when to start/stop/restart), `upgrade` and `boundary_node` (the
checks), `metrics` (port 9091), `dashboard` (port 7070), `leftovers`, `orchestrator` (wiring and
the event loop).

Adding a program
----------------
1. In `processes.py`, define its static config, its registry-driven arguments and the
   `Process`; `NAME` is the binary under `--ic-binary-directory` and the metric label::

       @dataclass(frozen=True)
       class NodeExporterConfig(ProcessConfig):
           listen_port: int = 9100

       @dataclass(frozen=True)
       class NodeExporterArgs:
           version: str
           ip: str

       class NodeExporterProcess(Process[NodeExporterConfig, NodeExporterArgs]):
           NAME = "node-exporter"

           @property
           def version(self) -> str:
               return self.args.version

           def arguments(self) -> list[str]:
               return ["--listen", str(ListenAddress(self.args.ip, self.config.listen_port))]

           def environment(self) -> dict[str, str]:
               return {}  # secrets go here, never in arguments()

           def restart_decision(self, args: NodeExporterArgs) -> RestartDecision:
               if args.version != self.args.version:
                   return Restart(f"version changed to {args.version}")
               return KeepRunning()

   and add it to `PROCESS_TYPES` (metric labels, dashboard line and pid-file handling follow).
2. Register it in `Orchestrator.__init__`: a `ProcessManager(NodeExporterProcess, config,
   make_runner(NodeExporterProcess.NAME), ...)` appended to `self.managers`, and, for a
   program tied to the subnet, a `Member(manager, wanted, args)` in `subnet_processes`
   (`wanted(assignment) -> bool` says when it runs; it is stopped otherwise).

The loop, the checks, start/stop logging, metrics, backoff and shutdown are unchanged.
"""
