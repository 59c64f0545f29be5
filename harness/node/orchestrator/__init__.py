"""The orchestrator: supervises a node's programs as the registry says, like the IC's.

It runs the replica while the node is a member of a subnet (at the subnet's replica version;
a new version or a new subnet restarts it), the ic-gateway side-car beside it on cloud-engine
subnets when the launch gate is on (`--enable-ic-gateway` or the node feature `ic_gateway` in
the registry), and ic-boundary while the node is an API boundary node. Programs run in their own
process groups; stopping is SIGTERM, then SIGKILL after `--stop-grace-period`; crash loops back
off; a restarted orchestrator first stops what its predecessor left behind.

Modules: `args` (flags → `OrchestratorConfig`), `envfile` (the env files of ic-gateway and
ic-boundary), `states` (the `ProcessState` machine), `process` (the `Process` abstraction),
`processes` (the programs and their `PROCESS_SPECS`), `policy` (which program runs when, with
which arguments), `manager` (the generic `ProcessManager`: one program's state machine, starts,
stops, backoff), `runner` (spawning, stopping, reaping), `pgroup` (process groups), `upgrade` and
`boundary_node` (the checks), `tasks` (background tasks), `metrics` (port 9091), `dashboard`
(port 7070), `leftovers` (what a previous instance left), `errors`, `fake` (a runner for tests),
`orchestrator` (wiring and the event loop). Ports and data-dir paths come from
`harness.node.layout`.

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

   (its port belongs in `harness.node.layout.Port`).
2. Add its spec to `PROCESS_SPECS`: `ProcessSpec(NodeExporterProcess, lambda flags:
   NodeExporterConfig(flags.ic_binary_directory))`. Its manager, runner, metric labels, pid
   file and dashboard line follow.
3. Give it its policy in `policy.py`: for a program tied to the subnet, a line in
   `subnet_programs`, `Member(manager_of(managers, NodeExporterProcess), wanted, args)`, with
   `wanted(assignment) -> bool` (it is stopped otherwise) and `args(assignment) ->
   NodeExporterArgs`. A program that follows another registry record (as ic-boundary does)
   gets its rules there too, and a check that hands them the record each pass (as
   `boundary_node`).

The loop, the checks, start/stop logging, metrics, backoff and shutdown are unchanged.
"""
