"""marketpulse.simulator: an exchange that speaks Kalshi WS v2 + REST v2, with fault injection.

```python
sim = Simulator(SimulatorConfig(port=0, markets=50, rate=1000.0, seed=1))
await sim.start()            # sim.rest_url, sim.ws_url, sim.key_id, sim.private_key_path
sim.book_levels(ticker)      # {"yes": [(Decimal, Decimal)], "no": [...]}, ascending by price
sim.pause(); sim.resume(); sim.faults.skip_seq(); sim.faults.drop_connection(); ...
await sim.stop()
```

Names are imported on first use (see ``marketpulse._lazy``): ``marketpulse simulate`` registers
itself without loading the simulator.
"""

from typing import TYPE_CHECKING

from marketpulse._lazy import lazy_import

__all__ = ["FaultSettings", "Faults", "Simulator", "SimulatorConfig"]

if TYPE_CHECKING:
    from ._faults import Faults, FaultSettings
    from ._server import Simulator, SimulatorConfig
else:
    lazy_import(
        globals(),
        {
            "Faults": "._faults",
            "FaultSettings": "._faults",
            "Simulator": "._server",
            "SimulatorConfig": "._server",
        },
    )
