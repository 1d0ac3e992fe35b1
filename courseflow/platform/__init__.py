"""What every process stands on: settings, logs, traces, metrics, Redis clients and key names."""
