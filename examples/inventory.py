"""A small inventory module, half written: the demo completes it where it says so."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Item:
    name: str
    price: float
    quantity: int = 0
    tags: list[str] = field(default_factory=list)

    def total_value(self) -> float:
        """Price times quantity."""
        # tealtab: complete here

    def is_in_stock(self) -> bool:
        # tealtab: complete here


class Inventory:
    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        """Add an item, or increase the quantity of an item with the same name."""
        if item.name in self.items:
            self.items[item.name].quantity += item.quantity
        else:
            self.items[item.name] = item

    def remove(self, name: str) -> Item:
        """Remove and return the item called name; KeyError when there is none."""
        # tealtab: complete here

    def total_value(self) -> float:
        return sum(item.total_value() for item in self.items.values())

    def find_by_tag(self, tag: str) -> list[Item]:
        """All items carrying the tag, sorted by name."""
        # tealtab: complete here

    def to_json(self) -> str:
        return json.dumps([item.__dict__ for item in self.items.values()], indent=2)


def load_inventory(path: str) -> Inventory:
    """Read an inventory saved by Inventory.to_json."""
    inventory = Inventory()
    with open(path, encoding="utf-8") as handle:
        for record in json.load(handle):
            # tealtab: complete here
    return inventory
