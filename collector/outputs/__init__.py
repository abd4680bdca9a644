"""What the collector sends out: sinks (stored windows to other stores), notifiers (alerts to
researchers) and exporters (live state rendered at scrape time).

Each kind is a small protocol with a name -> factory registry; the machinery shared by every
plug-in of a kind (queues, retry, backlog, counters) lives once, in the wrapper or the hub.
See ``docs/extending.md``.
"""
