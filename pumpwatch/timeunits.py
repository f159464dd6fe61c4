"""Time-unit constants, defined once. Every time inside PumpWatch is integer microseconds (µs)."""

US_PER_MS = 1_000
US_PER_S = 1_000_000
US_PER_MINUTE = 60 * US_PER_S
US_PER_HOUR = 3_600 * US_PER_S
US_PER_DAY = 86_400 * US_PER_S
MS_PER_S = 1_000
NS_PER_US = 1_000  # clocks such as time.time_ns and exchanges' ns timestamps
