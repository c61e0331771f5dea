"""What the core runs on: compiling and caching programs, devices and hosts, XLA's flags, fault injection."""
