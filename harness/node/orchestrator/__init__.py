"""The orchestrator: supervises a node's programs as the registry says, like the IC's.

It runs the replica while the node is a member of a subnet (at the subnet's replica version;
a new version or a new subnet restarts it), the ic-gateway side-car beside it on cloud-engine
subnets when the launch gate is on (`--enable-ic-gateway` or the node feature `ic_gateway` in
the registry), and ic-boundary while the node is an API boundary node. Programs run in their own
process groups; stopping is SIGTERM, then SIGKILL after `--stop-grace-period`; crash loops back
off; a restarted orchestrator first stops what its predecessor left behind.

Modules: `args` (flags → `OrchestratorConfig`), `envfile` (the env files of ic-gateway and
ic-boundary), `states` (the `ProcessState` machine), `process` (the `Process` abstraction),
`processes` (the programs' `Process` classes and `process_specs()`), `policy` (which program
runs when, from the programs' descriptions), `manager` (the generic `ProcessManager`: one
program's state machine, starts, stops, backoff), `runner` (spawning, stopping, reaping),
`pgroup` (process groups), `upgrade` and `boundary_node` (the checks), `tasks` (background
tasks), `metrics` (port 9091), `dashboard` (port 7070), `leftovers` (what a previous instance
left), `errors`, `fake` (a runner for tests), `orchestrator` (wiring and the event loop). Ports
and data-dir paths come from `harness.node.layout`.

Adding a program
----------------
Every program has one description, `harness.node.description.Program`, in
`harness.node.catalog.PROGRAMS`: its entry point, its ports and what each serves, when it runs
(`RunsOn`: the role of the node, subnet types, a launch gate, a domain), its Prometheus job and
plotted series, its stop grace period and backoff, and its `Process` class by name. The
orchestrator's managers, runners, metric labels, pid files, dashboard lines and policy follow
from it; so do the driver's URLs, health waits, Prometheus targets and reports. A program
whose command line and environment its description's templates say (`command`, `arguments`,
`environment`: a side-car, a program of a user's project) needs nothing more: the orchestrator
runs it as a `DescribedProcess`. One that needs code for them gets a `Process` in
`processes.py`::

    @dataclass(frozen=True)
    class NodeExporterConfig(ProcessConfig):
        listen_port: int = 9100

    @dataclass(frozen=True)
    class NodeExporterArgs:
        version: str
        ip: str

    class NodeExporterProcess(Process[NodeExporterConfig, NodeExporterArgs]):
        NAME = "node-exporter"  # its description's name

        @classmethod
        def configure(cls, flags: OrchestratorConfig) -> NodeExporterConfig:
            return NodeExporterConfig(flags.ic_binary_directory)

        @classmethod
        def args_for(cls, assignment: Assignment) -> NodeExporterArgs:
            return NodeExporterArgs(assignment.version, assignment.node.ip)

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

A supervised program runs either on subnet members (the upgrade check hands it the subnet's
`Assignment`) or on API boundary nodes (the boundary-node check hands it the API boundary
node's); a description that says otherwise is refused.

The loop, the checks, start/stop logging, metrics, backoff and shutdown are unchanged.
"""
