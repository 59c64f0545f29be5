"""The node image's recipe, shipped as package data: `Dockerfile`, `entrypoint` (the container's
command under tini) and `requirements.lock` (the exact, hashed versions of what the node
programs import; written by scripts/lock). `harness.driver.backends.images` builds the image
from them."""
