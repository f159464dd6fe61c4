"""Local exchange servers on 127.0.0.1 that speak each exchange's protocol (tests and demo)."""
