"""Named variants where they multiply (model types, adapters, regularizers): a registry maps a
config's ``type`` string to the class that implements it, so adding a variant is one new
class in one file, and the code that picks one never compares names::

    MODELS = Registry("model type")

    @MODELS.register("tdnnf")
    class TdnnModel(nn.Module): ...

    MODELS.get(params["type"])      # the class; an unknown name is a StageError listing the known
"""
from typing import Callable, Dict, Generic, List, TypeVar

from speechtune.errors import StageError

T = TypeVar("T")


class Registry(Generic[T]):
    """name -> registered object, for one kind of variant (``what`` names it in errors)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: Dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """A decorator registering its object under each of ``names``."""
        def add(entry: T) -> T:
            for name in names:
                if name in self._entries and self._entries[name] is not entry:
                    raise ValueError(f"{self.what} {name!r} is registered twice")
                self._entries[name] = entry
            return entry
        return add

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise StageError(f"{self.what} {name!r} is not known; known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
