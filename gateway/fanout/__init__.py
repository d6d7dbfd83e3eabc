"""The stream path's middle: no sockets and no HTTP.

``hub`` keeps which watchers watch which channels and fans each message out to them;
``watcher`` is one stream's state (what it was sent, what waits); ``writer`` drives its
ASGI ``send`` by hand; ``resync`` re-reads what restored channels may have missed.
"""
