"""Device simulators that replay real bearing recordings over real protocols."""
