"""Live I/O: exchange adapters, the connection runner, worker processes, the Upbit watcher."""
