"""A fork server: a single-threaded process that has imported every node program and forks
one on request, so that a program starts in milliseconds and shares the server's memory (copy
on write) instead of paying a fresh interpreter's imports, as multiprocessing's forkserver and
Android's zygote do. Every program stays a process of its own (pid, process group or session,
log, `ps` title); its exit status reaches the client as a `waitpid` status.

- `protocol`: the messages (JSON lines on a Unix socket);
- `server`: the server's loop and what a forked child does before it runs its program;
- `client`: the clients, blocking (`ForkClient`, for the harness's local backend, whose
  template forks orchestrators) and asyncio (`AsyncForkClient`, for an orchestrator, whose
  server forks its programs).
"""
