"""Balance strategies as the API spells them: the contract's names (`BALANCE_STRATEGIES`) <-> the proto enum.

The enum value of strategy `name` is `BALANCE_STRATEGY_<NAME>`; both directions are built from the contract's list
(an import fails if the proto lacks one), so a strategy added there needs only its enum value in the proto.
"""

from __future__ import annotations

from serving.proto import synthesizer_pb2 as pb
from synthserve.contract import BALANCE_STRATEGIES

__all__ = ["STRATEGY_ENUMS", "STRATEGY_NAMES"]

# name -> the enum value's name, which protobuf accepts wherever it takes the value
STRATEGY_ENUMS: dict[str, str] = {name: f"BALANCE_STRATEGY_{name.upper()}" for name in BALANCE_STRATEGIES}
STRATEGY_NAMES: dict[int, str] = {pb.BalanceStrategy.Value(enum): name for name, enum in STRATEGY_ENUMS.items()}
