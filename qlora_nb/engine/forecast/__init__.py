"""Time forecasts: model FLOPs, this machine's measured rates, timed steps, and the plan with time."""
