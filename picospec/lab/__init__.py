"""picospec.lab: the evaluation lab, apart from the runtime.

The link emulator, the time model, the discrete-event simulator and its
timing profiles, the in-process loop, the loopback cloud, the demo and the
benchmarks. The lab drives the runtime (the same sessions, client and server);
the runtime never imports the lab.
"""
