"""`python -m harness.node.forkserver --fd N`: an exec'd fork server (see `server`)."""

from harness.node.forkserver.server import main

if __name__ == "__main__":
    main()
