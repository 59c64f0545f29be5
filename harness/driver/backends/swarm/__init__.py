"""The swarm backend: every node is a Docker Swarm service, so a testnet can span every machine
of an existing swarm. The harness must run on a manager of that swarm.

How a testnet maps onto Swarm:

- Network: one attachable overlay network per testnet, with a /24 from 10.200.0.0/13 picked at
  random and checked against the engine's networks. Services use `endpoint_mode: dnsrr`
  (virtual IPs and the ingress routing mesh need IPVS, which some engines, such as this
  project's CI machines, lack).
- Nodes: one service per node, one replica, restart on failure, hostname and network alias the
  node id. A task gets its IP from the overlay when it starts, and a new task (after a restart or
  a move to another machine) gets another one, so the registry records a node's address as its
  node id: a name that resolves to the node's current IP on the overlay (for its own programs,
  through /etc/hosts). The node's data dir (logs, pid files, fault knobs) lives in its task's
  container, never in a shared folder.
- Placement: the swarm scheduler puts each new task on the machine running the fewest, which
  spreads one-task services over the machines; a topology's machine label
  (`InternetComputer.with_machine_label`) pins a node with a `node.labels.KEY==VALUE`
  constraint.
- Registry: a `registry-service` service (`harness.node.registry.http`) serves the testnet's
  registry directory, read-only, on port 8000 under the network alias `registry`; the
  orchestrators poll it with `--registry-url`. It is the one service pinned to the harness's
  own machine, where the registry directory is written. It is created in `allocate()`, so its
  task starts while the access container does, off the nodes' path; the first node's start
  waits until it answers.
- Access: one container of the node image on the overlay network, running `microsocks` (a
  SOCKS5 proxy, Debian package), with its port published on 127.0.0.1 only. The harness's HTTP
  client (`Testnet.http`) goes through it, so `endpoint()` is simply (node id, port), resolved
  inside the overlay; nothing of a node is published on any host interface.
- Labels: services, the access container, task containers and the network carry the docker
  backend's labels (`org.harness.run-id`, `org.harness.testnet-id`, ...), so `teardown()`,
  `harness down --all` and the sweep at the start of every run remove them the same way.
- Starts wait until the node answers through the access proxy. Seen after a stop and a start
  (twice in ~130 such starts here, once in CI): the service scaled back to 1 gets no task for a
  minute, or its running task's name is missing from the overlay's DNS. A start stuck either
  way (for `tasks.NO_TASK_PATIENCE`, `tasks.UNRESOLVED_PATIENCE` seconds) asks the swarm once
  for a new task (a forced update); a start that fails anyway says what the swarm made of its
  tasks and what the overlay's DNS answers.
- Prometheus (`with_prometheus()`): a container of the Prometheus image on this machine, on
  the overlay like the access proxy, scraping every node by its name (`prometheus_container`).
- Faults: `kill_process` runs `kill` in the task's container; `stop_node`/`start_node` scale the
  service to 0 and back (a new task); `partition_node`/`heal_node` refuse, then allow again,
  every packet of the task's container but its loopback (iptables in its network namespace;
  taking it off the overlay instead loses its DNS name there, which reconnecting does not bring
  back); `pause_node` freezes the container. These use the engine of the machine the task runs
  on, which the harness reaches only for tasks on its own machine: on another machine they
  raise `HarnessError` naming it.
- Images: the node image is built here; other machines need it under the same tag, e.g. from a
  registry the user runs (`harness images push`, see README).

Modules: `backend` (`SwarmBackend`), `tasks` (what a service's tasks say about its node's
start: pure functions of the task dicts), `services` (the node and registry services),
`access` (the access proxy, and the overlay's DNS seen from it), `partition` (the iptables
rules of a partition), `manager` (the check that the engine is a swarm manager).
"""

from harness.driver.backends.swarm.backend import SwarmBackend
from harness.driver.backends.swarm.manager import swarm_node_id

__all__ = ["SwarmBackend", "swarm_node_id"]
