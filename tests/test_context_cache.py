"""The worker's transcript cache must give exactly what the workflow's query would."""

import random

from activities.caller import CallingRun
from activities.context_cache import ContextCache, ToolResultCache
from workflows.context import digest, fit_context
from workflows.messages import ContextMessage, LLMTurnInput, ToolCall, ToolOutcome

SYSTEM = ContextMessage(role="system", content="be brief")
RUN = CallingRun("wf", "run")


def in_run(run_id: str) -> CallingRun:
    return CallingRun(RUN.workflow_id, run_id)


def turn_input(history: list[ContextMessage], user: str) -> LLMTurnInput:
    return LLMTurnInput(
        turn=len(history) // 2 + 1,
        upto_seq=len(history) + 1,
        model="scripted/echo",
        user_message=user,
        previous_digest=digest(history[-1].content) if history else None,
        system_prompt=SYSTEM.content if not history else None,
    )


def add(history: list[ContextMessage], message: ContextMessage) -> None:
    """Append `message` as the session's next message, numbered as the workflow does."""
    history.append(message.model_copy(update={"seq": len(history) + 1}))


def queried(history: list[ContextMessage], max_chars: int) -> list[ContextMessage]:
    """What the workflow's llm_context query answers."""
    return [SYSTEM, *fit_context(history, max_chars)]


def test_cache_hits_match_the_query_over_a_long_random_conversation() -> None:
    rng = random.Random(7)
    max_chars = 300
    cache = ContextCache(max_sessions=10)
    history: list[ContextMessage] = []
    hits = 0
    for _ in range(200):
        user = "u" * rng.randint(1, 120)
        turn = turn_input(history, user)
        add(history, ContextMessage(role="user", content=user))
        context = cache.context_for(RUN, turn, max_chars)
        if context is None:
            context = queried(history, max_chars)
        else:
            hits += 1
        assert context == queried(history, max_chars)
        reply = "a" * rng.randint(1, 200)
        cache.remember(RUN, turn, context, reply, max_chars=max_chars)
        add(history, ContextMessage(role="assistant", content=reply))
    assert hits == 200  # not one turn needed the query


def test_a_different_reply_in_history_is_a_miss() -> None:
    cache = ContextCache(max_sessions=10)
    first = turn_input([], "hi")
    cache.remember(
        RUN, first, [SYSTEM, ContextMessage(role="user", content="hi")], "reply A", max_chars=1000
    )
    # A retry elsewhere produced "reply B", which is what history holds.
    history = [
        ContextMessage(role="user", content="hi"),
        ContextMessage(role="assistant", content="reply B"),
    ]
    assert cache.context_for(RUN, turn_input(history, "next"), 1000) is None
    history[1] = ContextMessage(role="assistant", content="reply A")
    assert cache.context_for(RUN, turn_input(history, "next"), 1000) is not None
    assert cache.context_for(in_run("other-run"), turn_input(history, "next"), 1000) is None


def test_failures_and_gaps_miss_and_the_cache_is_bounded() -> None:
    cache = ContextCache(max_sessions=2)
    base = [ContextMessage(role="user", content="x")]
    for run in ("r1", "r2", "r3"):
        cache.remember(in_run(run), turn_input([], "x"), base, "y", max_chars=1000)
    history = [*base, ContextMessage(role="assistant", content="y")]
    assert cache.context_for(in_run("r1"), turn_input(history, "z"), 1000) is None  # evicted
    assert cache.context_for(in_run("r3"), turn_input(history, "z"), 1000) is not None
    cache.forget(in_run("r3"))
    assert cache.context_for(in_run("r3"), turn_input(history, "z"), 1000) is None
    skipped = [*history, ContextMessage(role="user", content="failed turn")]
    assert cache.context_for(in_run("r2"), turn_input(skipped, "z"), 1000) is None


def test_a_tool_call_is_never_separated_from_its_results() -> None:
    call = ContextMessage(
        role="assistant",
        content="c" * 20,
        tool_calls=[ToolCall(id="c1", name="calculate", arguments='{"expression": "1+1"}')],
    )
    result = ContextMessage(role="tool", content="2" * 50, tool_call_id="c1")
    question = ContextMessage(role="user", content="q" * 40)
    answer = ContextMessage(role="assistant", content="a" * 40)
    history = [question, call, result, answer]
    # After the answer there is room for the result (50) but not for it with its call (70):
    # both go.
    assert fit_context(history, 100) == [answer]
    # Room for the call group too: it comes whole, and the question no longer fits.
    assert fit_context(history, 120) == [call, result, answer]
    # A group that is itself the newest unit is kept whole even when it is too large.
    assert fit_context([question, call, result], 10) == [call, result]


def test_tool_rounds_hit_the_cache_and_match_the_query() -> None:
    """Turns with random tool rounds: the model call after each round is served from the
    worker's memory (its call request + the results the tool activity left) and equals the
    query's answer."""
    rng = random.Random(11)
    max_chars = 400
    results = ToolResultCache(max_entries=100)
    cache = ContextCache(max_sessions=10, results=results)
    history: list[ContextMessage] = []
    hits = model_calls = 0
    for turn_number in range(1, 60):
        user = "u" * rng.randint(1, 80)
        turn = turn_input(history, user).model_copy(update={"turn": turn_number})
        add(history, ContextMessage(role="user", content=user))
        rounds = rng.randint(0, 2)  # tool rounds before the answer
        for step in range(1, rounds + 2):
            context = cache.context_for(RUN, turn, max_chars)
            model_calls += 1
            if context is None:
                context = queried(history, max_chars)
            else:
                hits += 1
            assert context == queried(history, max_chars)
            calls = [
                ToolCall(id=f"t{turn_number}-{step}-{i}", name="calculate", arguments="{}")
                for i in range(rng.randint(1, 3) if step <= rounds else 0)
            ]
            reply = "a" * rng.randint(0 if calls else 1, 60)
            cache.remember(RUN, turn, context, reply, calls, max_chars=max_chars)
            add(history, ContextMessage(role="assistant", content=reply, tool_calls=calls))
            for call in calls:
                outcome = ToolOutcome(content="r" * rng.randint(1, 90), is_error=rng.random() < 0.2)
                results.put(RUN.workflow_id, turn_number, call.id, outcome)
                add(
                    history,
                    ContextMessage(
                        role="tool",
                        content=outcome.content,
                        tool_call_id=call.id,
                        is_error=outcome.is_error,
                    ),
                )
            digests = [digest(m.content) for m in history[len(history) - len(calls) :]]
            turn = turn.model_copy(
                update={
                    "step": step + 1,
                    "upto_seq": len(history),
                    "user_message": "",
                    "result_digests": digests,
                }
            )
    assert model_calls > 100
    assert hits == model_calls  # every model call, before and after tools, without a query


def test_a_tool_result_this_worker_did_not_produce_is_a_miss() -> None:
    results = ToolResultCache(max_entries=10)
    cache = ContextCache(max_sessions=10, results=results)
    first = turn_input([], "add")
    call = ToolCall(id="c1", name="calculate", arguments="{}")
    cache.remember(
        RUN,
        first,
        [SYSTEM, ContextMessage(role="user", content="add")],
        "",
        [call],
        max_chars=1000,
    )
    after = first.model_copy(
        update={"step": 2, "upto_seq": 3, "user_message": "", "result_digests": [digest("2")]}
    )
    assert cache.context_for(RUN, after, 1000) is None  # ran on another worker
    results.put(RUN.workflow_id, first.turn, "c1", ToolOutcome(content="3"))
    assert cache.context_for(RUN, after, 1000) is None  # history says "2": not what this worker saw
    results.put(RUN.workflow_id, first.turn, "c1", ToolOutcome(content="2"))
    hit = cache.context_for(RUN, after, 1000)
    assert hit is not None and [m.role for m in hit] == ["system", "user", "assistant", "tool"]
