"""`calculate`: exact arithmetic for the model, evaluated from the syntax tree, never `eval`.

Only numbers, arithmetic operators, a few math functions and constants are understood; every
other construct is refused by name. Sizes are bounded before any work is done, so an
expression like `9**9**9` fails at once instead of eating the worker.
"""

import ast
import math
import operator
from collections.abc import Callable

from pydantic import BaseModel, Field

from tools.registry import tool

Number = int | float

MAX_EXPRESSION_CHARS = 500
MAX_INT_BITS = 10_000
"""About 3,000 decimal digits: far beyond any real question, and cheap to compute."""
MAX_ROUND_DIGITS = 100

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _round(x: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round: digits must be a whole number up to {MAX_ROUND_DIGITS}")
    return round(x, digits) if digits else round(x)


def _log(x: Number, base: Number = math.e) -> float:
    return math.log(x, base)


def _min(*values: Number) -> Number:
    return min(values)


def _max(*values: Number) -> Number:
    return max(values)


_FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    # name: (function, fewest arguments, most arguments or None for any)
    "sqrt": (math.sqrt, 1, 1),
    "abs": (abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (_min, 1, None),
    "max": (_max, 1, None),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (math.log10, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
}


class CalculateArgs(BaseModel):
    expression: str = Field(
        min_length=1,
        max_length=MAX_EXPRESSION_CHARS,
        description="Arithmetic, e.g. '(17 + 3) * 2 ** 10 / 7'. Operators: + - * / // % **; "
        f"functions: {', '.join(_FUNCTIONS)}; constants: {', '.join(_CONSTANTS)}.",
    )


def evaluate(expression: str) -> Number:
    """The value of `expression`; ValueError with the reason for anything not allowed."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"Expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"Not a valid arithmetic expression ({exc.msg}).") from None
    try:
        result = _eval(tree.body)
    except ZeroDivisionError:
        raise ValueError("Division by zero.") from None
    except OverflowError:
        raise ValueError("The result is too large.") from None
    except RecursionError:
        raise ValueError("The expression is nested too deeply.") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise ValueError("The result is not a finite number.")
    return result


def _eval(node: ast.expr) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ValueError(f"Only numbers are allowed, not {node.value!r}.")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        if isinstance(node.op, ast.BitXor):
            raise ValueError("'^' is not a power operator here; use ** for powers.")
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ValueError(f"Operator {type(node.op).__name__} is not allowed.")
        return _checked(op(left, right))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ValueError(f"Unknown name {node.id!r}; constants: {', '.join(_CONSTANTS)}.")
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.Attribute):
        raise ValueError("Attribute access is not allowed.")
    raise ValueError(f"Unsupported syntax: {type(node).__name__}.")


def _call(node: ast.Call) -> Number:
    if isinstance(node.func, ast.Attribute):
        raise ValueError("Attribute access is not allowed.")
    if not isinstance(node.func, ast.Name):
        raise ValueError("Only the listed functions can be called, by name.")
    name = node.func.id
    if name not in _FUNCTIONS:
        raise ValueError(f"Function {name!r} is not allowed; functions: {', '.join(_FUNCTIONS)}.")
    if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
        raise ValueError(f"{name}() takes plain positional arguments only.")
    func, fewest, most = _FUNCTIONS[name]
    if len(node.args) < fewest or (most is not None and len(node.args) > most):
        raise ValueError(f"{name}() got {len(node.args)} arguments.")
    args = [_eval(arg) for arg in node.args]
    try:
        return _checked(func(*args))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}(): {exc}.") from None


def _power(base: Number, exponent: Number) -> Number:
    """Refuse integer powers whose result would exceed the size bound, before computing."""
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS
    ):
        raise ValueError(f"The result is too large (over {MAX_INT_BITS} bits).")
    result: Number = base**exponent
    if isinstance(result, complex):
        raise ValueError("The result is not a real number.")
    return result


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ValueError(f"The result is too large (over {MAX_INT_BITS} bits).")
    return value


def format_number(value: Number) -> str:
    """Integers exactly; floats to 15 significant digits, so 0.1 + 0.2 reads 0.3."""
    if isinstance(value, int):
        return str(value)
    return format(value, ".15g")


@tool(
    name="calculate",
    description="Evaluate an arithmetic expression exactly. Use it for any calculation "
    "instead of doing arithmetic yourself.",
    timeout_seconds=5,
    max_attempts=3,
)
async def calculate(args: CalculateArgs) -> str:
    return format_number(evaluate(args.expression))
