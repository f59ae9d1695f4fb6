"""Function modules: queries, mutations and actions declared with decorators.

A :class:`FunctionModule` declares its NAME (the part of a path before ``:``), which need not be
the Python file name::

    messages = FunctionModule("messages", schema=schema)

    @messages.query
    def list(ctx: QueryCtx, channel: str, limit: int = 20) -> list[dict]: ...

Arguments are validated from the handler's type hints with pydantic, once compiled at
registration: ints accept integral floats (the Python client sends every number as a float),
floats accept ints, strings are never coerced to numbers, unknown arguments are rejected.

For tools (e.g. a TypeScript code generator), :attr:`FunctionModule.functions` maps each
function name to a :class:`FunctionSpec` holding its kind, visibility, per-argument type hints
(:class:`ArgSpec`) and return hint.
"""

from __future__ import annotations

import enum
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    TypeVar,
    Union,
    get_args,
    get_origin,
    overload,
)

from pydantic import (
    BeforeValidator,
    ConfigDict,
    PlainValidator,
    PydanticSchemaGenerationError,
    PydanticUserError,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

from .errors import ArgumentValidationError
from .schema import Schema
from .values import Int64

__all__ = [
    "ArgSpec",
    "Durability",
    "FunctionKind",
    "FunctionModule",
    "FunctionSpec",
    "PaginationOptions",
    "PaginationResult",
    "Visibility",
    "canonical_path",
]


class PaginationOptions(TypedDict):
    """A paginated query's ``paginationOpts`` argument, as the clients send it
    (``usePaginatedQuery``, ``onPaginatedUpdate_experimental``); Convex's
    ``paginationOptsValidator``. Typed so, the argument's generated TypeScript is the
    ``PaginationOptions`` that ``usePaginatedQuery`` requires; ``.paginate`` checks the values."""

    numItems: float
    cursor: str | None
    endCursor: NotRequired[str | None]
    id: NotRequired[float]
    maximumRowsRead: NotRequired[float]
    maximumBytesRead: NotRequired[float]


class PaginationResult(TypedDict):
    """What ``.paginate`` returns; Convex's ``PaginationResult``. A paginated query's return
    hint, so its generated TypeScript is what ``usePaginatedQuery`` requires (a TypedDict of the
    same keys with a typed ``page`` types the results too)."""

    page: list[dict[str, Any]]
    isDone: bool
    continueCursor: str
    splitCursor: NotRequired[str | None]
    pageStatus: NotRequired[Literal["SplitRecommended", "SplitRequired"] | None]


FunctionKind = Literal["query", "mutation", "action"]
Visibility = Literal["public", "internal"]
Durability = Literal["durable", "relaxed"]
"""When a mutation's commit is durable: ``durable`` (the default, the Convex promise) before
its caller gets the answer; ``relaxed`` by the next group flush, at most the engine's
``relaxed_flush_s`` later (docs/store.md, "Durability"). Like PostgreSQL's
``synchronous_commit=off``: visible at once, a crash can lose the last few ms of them."""
_DURABILITIES = ("durable", "relaxed")
F = TypeVar("F", bound=Callable[..., Any])

_MISSING: Any = object()
_STRICT = ConfigDict(strict=True)


def canonical_path(path: str) -> str:
    """Canonicalise a function path as the clients send it.

    ``mod:fn`` and ``mod.js:fn`` become ``mod:fn``; ``mod`` becomes ``mod:default``; nested
    modules use ``/`` (``a/b:c``).

    Raises:
        ValueError: the path is not a string or is malformed.
    """
    if not isinstance(path, str) or not path:
        raise ValueError("function path must be a non-empty string")
    module, sep, name = path.partition(":")
    if not sep:
        name = "default"
    module = module.removesuffix(".js")
    if not module or not name or ":" in name:
        raise ValueError(f"malformed function path {path!r}")
    return f"{module}:{name}"


def _int_from_integral_float(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_CONTAINERS = (list, dict, tuple, set, frozenset, Sequence, Mapping)
_RELAXED_INT = Annotated[int, BeforeValidator(_int_from_integral_float)]


def _to_int64(value: Any) -> Int64:
    # An int64 argument (a JS bigint) must arrive as an integer, never as a float.
    if isinstance(value, int) and not isinstance(value, bool):
        return value if isinstance(value, Int64) else Int64(value)
    raise ValueError(f"expected an int64 (bigint), got {type(value).__name__}")


_INT64 = Annotated[Any, PlainValidator(_to_int64)]

# Containers the clients can only send as arrays (Convex values have no tuple or set), which
# strict validation refuses from a list: the array is turned into one first.
_FROM_ARRAY: dict[Any, type] = {tuple: tuple, set: set, frozenset: frozenset}


def _from_array(kind: type) -> BeforeValidator:
    def convert(value: Any) -> Any:
        if isinstance(value, list):
            try:
                return kind(value)
            except TypeError:  # unhashable items for a set: strict validation says what is wrong
                return value
        return value

    return BeforeValidator(convert)


def _enum_from_value(cls: type[enum.Enum]) -> BeforeValidator:
    """An Enum argument from its value, which is what a client sends (strict validation takes
    only a member); a bool is no int here either."""

    def convert(value: Any) -> Any:
        if isinstance(value, cls | bool):
            return value
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in cls)
            raise ValueError(f"expected one of {allowed}") from None

    return BeforeValidator(convert)


def _relax(tp: Any) -> Any:
    """Rewrite a type hint so that, under strict validation, ``int`` accepts integral floats and
    a tuple or set accepts the array a client sends for it, an Enum its value."""
    if tp is int:
        return _RELAXED_INT
    if tp is Int64:
        return _INT64
    if tp in _FROM_ARRAY:
        return Annotated[tp, _from_array(_FROM_ARRAY[tp])]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return Annotated[tp, _enum_from_value(tp)]
    origin = get_origin(tp)
    if origin is None:
        return tp
    args = get_args(tp)
    if origin is Annotated:
        return Annotated[(_relax(args[0]), *tp.__metadata__)]  # type: ignore[misc]
    if origin is Literal:
        return tp
    if origin is Union or origin is types.UnionType:
        return Union[tuple(_relax(a) for a in args)]  # noqa: UP007
    if origin in _CONTAINERS:
        try:
            relaxed = origin[tuple(_relax(a) if a is not Ellipsis else a for a in args)]
        except TypeError:
            return tp
        if origin in _FROM_ARRAY:
            return Annotated[relaxed, _from_array(_FROM_ARRAY[origin])]
        return relaxed
    return tp


@dataclass(frozen=True)
class ArgSpec:
    """One declared argument.

    Attributes:
        name: argument name.
        annotation: the type hint as written (``typing.Any`` when absent).
        required: whether the caller must pass it.
        default: the default value when not required.
    """

    name: str
    annotation: Any
    required: bool
    default: Any = None


@dataclass
class FunctionSpec:
    """A registered function and everything needed to call or describe it.

    Attributes:
        module: the declaring module's name.
        name: the function name (``default`` for a default export).
        kind: ``query``, ``mutation`` or ``action``.
        visibility: ``public`` or ``internal`` (internal: admin callers and actions only).
        handler: the Python callable (async for actions).
        args: declared arguments in order.
        return_hint: the return type hint (``typing.Any`` when absent).
        durability: when a mutation's commit is durable (see :data:`Durability`).
    """

    module: str
    name: str
    kind: FunctionKind
    visibility: Visibility
    handler: Callable[..., Any]
    args: tuple[ArgSpec, ...]
    return_hint: Any
    durability: Durability = "durable"
    _adapters: dict[str, TypeAdapter[Any]] = field(default_factory=dict, repr=False)
    _accepts_kwargs: bool = False

    @property
    def path(self) -> str:
        """The canonical path, ``module:name``."""
        return f"{self.module}:{self.name}"

    def validate_args(self, args: Any) -> dict[str, Any]:
        """Validate call arguments; return the keyword arguments for the handler.

        Raises:
            ArgumentValidationError: with a message naming every offending argument.
        """
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            raise ArgumentValidationError(
                f"ArgumentValidationError: arguments of {self.path} must be an object, "
                f"got {type(args).__name__}"
            )
        problems: list[str] = []
        out: dict[str, Any] = {}
        declared = {a.name: a for a in self.args}
        for key in args:
            if key not in declared and not self._accepts_kwargs:
                problems.append(f"unexpected argument {key!r}")
        for spec in self.args:
            if spec.name not in args:
                if spec.required:
                    problems.append(f"missing required argument {spec.name!r}")
                continue
            try:
                out[spec.name] = self._adapters[spec.name].validate_python(args[spec.name])
            except ValidationError as exc:
                for err in exc.errors(include_url=False):
                    loc = ".".join(str(p) for p in (spec.name, *err["loc"]))
                    problems.append(f"{loc}: {err['msg']} (got {_short(err.get('input'))})")
        if self._accepts_kwargs:
            for key, value in args.items():
                if key not in declared:
                    out[key] = value
        if problems:
            raise ArgumentValidationError(
                f"ArgumentValidationError: invalid arguments for {self.path}: "
                + "; ".join(problems)
            )
        return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _adapter(module: str, name: str, arg: str, ann: Any) -> TypeAdapter[Any]:
    relaxed = _relax(ann)
    try:
        return TypeAdapter(relaxed, config=_STRICT)
    except PydanticUserError:
        # Types carrying their own config (pydantic models, dataclasses with config) refuse an
        # outer one; they validate with their own settings.
        pass
    except PydanticSchemaGenerationError as exc:
        raise TypeError(
            f"{module}:{name}: argument {arg!r} has an unsupported type {ann!r}"
        ) from exc
    try:
        return TypeAdapter(relaxed)
    except PydanticSchemaGenerationError as exc:
        raise TypeError(
            f"{module}:{name}: argument {arg!r} has an unsupported type {ann!r}"
        ) from exc
    except PydanticUserError as exc:
        # e.g. a typing.TypedDict on Python < 3.12 (pydantic needs typing_extensions')
        reason = str(exc).splitlines()[0]
        raise TypeError(f"{module}:{name}: argument {arg!r}: {reason}") from exc


def _build_spec(
    module: str,
    name: str,
    kind: FunctionKind,
    visibility: Visibility,
    fn: Callable[..., Any],
    durability: Durability = "durable",
) -> FunctionSpec:
    if durability not in _DURABILITIES:
        raise ValueError(
            f"{module}:{name}: durability must be 'durable' or 'relaxed', got {durability!r}"
        )
    if kind == "action" and not inspect.iscoroutinefunction(fn):
        raise TypeError(f"action {module}:{name} must be declared with 'async def'")
    if kind != "action" and inspect.iscoroutinefunction(fn):
        raise TypeError(f"{kind} {module}:{name} must be a plain (synchronous) function")
    sig = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference is a declaration error
        raise TypeError(f"cannot resolve the type hints of {module}:{name}: {exc}") from exc
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"{module}:{name} must take the context as its first parameter")
    specs: list[ArgSpec] = []
    adapters: dict[str, TypeAdapter[Any]] = {}
    accepts_kwargs = False
    for p in params[1:]:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_kwargs = True
            continue
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            raise TypeError(f"{module}:{name}: *args is not supported")
        ann = hints.get(p.name, Any)
        required = p.default is inspect.Parameter.empty
        specs.append(ArgSpec(p.name, ann, required, None if required else p.default))
        adapters[p.name] = _adapter(module, name, p.name, ann)
    return FunctionSpec(
        module=module,
        name=name,
        kind=kind,
        visibility=visibility,
        handler=fn,
        args=tuple(specs),
        return_hint=hints.get("return", Any),
        durability=durability,
        _adapters=adapters,
        _accepts_kwargs=accepts_kwargs,
    )


class FunctionModule:
    """A named group of functions, optionally with the schema of the tables it uses.

    Args:
        name: the module name clients use in paths (``name:function``); may contain ``/``.
        schema: the tables and indexes this module declares.
    """

    def __init__(self, name: str, *, schema: Schema | None = None) -> None:
        if not isinstance(name, str) or not name or ":" in name or name.endswith(".js"):
            raise ValueError(f"invalid module name {name!r}")
        self.name = name
        self.schema = schema or Schema()
        self._functions: dict[str, FunctionSpec] = {}

    @property
    def functions(self) -> Mapping[str, FunctionSpec]:
        """Function name -> :class:`FunctionSpec` (read-only view, declaration order)."""
        return types.MappingProxyType(self._functions)

    def _register(
        self,
        kind: FunctionKind,
        visibility: Visibility,
        fn: Any,
        name: str | None,
        durability: Durability = "durable",
    ) -> Any:
        def decorate(f: F) -> F:
            fname = name or f.__name__
            if fname in self._functions:
                raise ValueError(f"{self.name}:{fname} is declared twice")
            self._functions[fname] = _build_spec(self.name, fname, kind, visibility, f, durability)
            return f

        return decorate(fn) if fn is not None else decorate

    def query(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Declare a public query (``@m.query`` or ``@m.query(name="x")``)."""
        return self._register("query", "public", fn, name)

    @overload
    def mutation(self, fn: F, /) -> F: ...
    @overload
    def mutation(
        self, fn: None = None, /, *, name: str | None = None, durability: Durability = "durable"
    ) -> Callable[[F], F]: ...
    def mutation(
        self, fn: Any = None, /, *, name: str | None = None, durability: Durability = "durable"
    ) -> Any:
        """Declare a public mutation (``durability="relaxed"``: see :data:`Durability`)."""
        return self._register("mutation", "public", fn, name, durability)

    def internal_query(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Declare an internal query (admin callers and actions only)."""
        return self._register("query", "internal", fn, name)

    @overload
    def internal_mutation(self, fn: F, /) -> F: ...
    @overload
    def internal_mutation(
        self, fn: None = None, /, *, name: str | None = None, durability: Durability = "durable"
    ) -> Callable[[F], F]: ...
    def internal_mutation(
        self, fn: Any = None, /, *, name: str | None = None, durability: Durability = "durable"
    ) -> Any:
        """Declare an internal mutation (admin callers and actions only); ``durability`` as
        for :meth:`mutation`."""
        return self._register("mutation", "internal", fn, name, durability)

    def action(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Declare a public action (``async def``; may call other functions via ``ctx``)."""
        return self._register("action", "public", fn, name)

    def internal_action(self, fn: Any = None, /, *, name: str | None = None) -> Any:
        """Declare an internal action."""
        return self._register("action", "internal", fn, name)

    def __repr__(self) -> str:
        return f"FunctionModule({self.name!r}, functions={list(self._functions)})"
