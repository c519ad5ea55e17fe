// Differential-conformance oracle: runs JSON-described machines with the real XState (pinned 5.24.0).
//
// stdin:  {"limit": <vocabulary calls allowed per step>, "maxFirings": <timers fired per advance>,
//          "cases": [{"machine", "input", "contextMode", "events", "clock"?}]}
// stdout: {"version": "<xstate version>", "results": [{"steps": [step...]} | {"fatal": "<message>"}]}
//   step = {"status", "value", "context", "output", "emitted", "traces", "timers"} or {"error": "<message>"}
//   (last step); timers = [[delayed event type, due time], ...] pending on the clock, in firing order.
//
// Between steps the actor is persisted with getPersistedSnapshot(), JSON round-tripped and restored with
// createActor(machine, {snapshot}), exactly like Arvo's MachineExecutionEngine. Cases with "clock": true
// (machines with delayed transitions) instead keep one live actor on a SimulatedClock, because XState
// drops pending timers on a save/restore; their events may be {"$advance": ms}: the clock moves by ms
// and then by 0 until no timer is due (SimulatedClock.increment alone can leave a timer armed by a firing
// timer unfired). The machine JSON uses a small marker vocabulary (see
// tests/interop/test_xstate_conformance.py, which implements the same vocabulary in Python):
// actions/guards are {"type", "params"} objects naming the functions below; {"$and"|"$or": [...]},
// {"$not": g} are guard combinators, {"$in": stateValue} is stateIn; {"$params": "fromContext", ...} is a
// params function; {"$output": "root"|"final", ...} marks output mappers; "after" keys name the delays
// below or are numbers.
import { readFileSync } from 'node:fs';
import { SimulatedClock, and, assign, createActor, emit, not, or, setup, stateIn } from 'xstate';

const pkg = JSON.parse(readFileSync(new URL('./node_modules/xstate/package.json', import.meta.url), 'utf8'));
const request = JSON.parse(readFileSync(0, 'utf8'));
const LIMIT = request.limit ?? 20000;
const MAX_FIRINGS = request.maxFirings ?? 100;

const num = (v) => (typeof v === 'number' ? v : 0);

function vocabulary(traces, tick, evaluations) {
  const actions = {
    inc: assign(({ context }, p) => (tick(), { [p.key]: num(context[p.key]) + p.by })),
    reset: assign((_, p) => (tick(), { [p.key]: 0 })),
    setFromEvent: assign(({ event }, p) => (tick(), { [p.key]: event.value ?? null })),
    setFromEventOutput: assign(({ event }, p) => (tick(), { [p.key]: event.output ?? null })),
    toggle: assign(({ context }, p) => (tick(), { [p.key]: !context[p.key] })),
    record: assign(({ context, event }, p) => (tick(), { log: [...context.log, `${p.label}@${event.type}`] })),
    emitEvent: emit(({ context, event }, p) => (
      tick(), { type: p.type, payload: context[p.key] ?? null, n: context.log.length, via: event.type }
    )),
    trace: ({ context, event }, p) => {
      tick();
      traces.push(`${p.label}@${event.type}#${context.log.length}`);
    },
  };
  const guards = {
    ctxGte: ({ context }, p) => (tick(), num(context[p.key]) >= p.n),
    ctxLt: ({ context }, p) => (tick(), num(context[p.key]) < p.n),
    ctxFlag: ({ context }, p) => (tick(), context[p.key] === true),
    eventValueEven: ({ event }) => (tick(), typeof event.value === 'number' && event.value % 2 === 0),
    eventIs: ({ event }, p) => (tick(), event.type === p.type),
    under: (_, p) => {
      tick();
      evaluations.under = (evaluations.under ?? 0) + 1;
      return evaluations.under <= p.n;
    },
  };
  const delays = {
    short: 10,
    fromCtx: ({ context }) => (tick(), (num(context.c) % 3) * 10),
    fromEvent: ({ event }) => (tick(), typeof event.value === 'number' ? event.value * 5 : 15),
  };
  return { actions, guards, delays };
}

const toArray = (v) => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function convertParams(params) {
  if (params && typeof params === 'object' && params.$params === 'fromContext') {
    const { key, src } = params;
    return ({ context }) => ({ key, by: (num(context[src]) % 3) + 1 });
  }
  return params;
}

function convertAction(action) {
  if (action && typeof action === 'object' && 'params' in action) {
    return { type: action.type, params: convertParams(action.params) };
  }
  return action;
}

function convertGuard(guard) {
  if (guard && typeof guard === 'object') {
    if (guard.$and) return and(guard.$and.map(convertGuard));
    if (guard.$or) return or(guard.$or.map(convertGuard));
    if (guard.$not) return not(convertGuard(guard.$not));
    if ('$in' in guard) return stateIn(guard.$in);
  }
  return guard;
}

function convertOutput(marker) {
  if (marker.$output === 'root') {
    return ({ context, event }) => ({
      n: context.log.length,
      ev: event.type,
      out: event.output ?? null,
      c: context.c ?? null,
    });
  }
  const { key } = marker;
  return ({ context }) => ({ k: context[key] ?? null });
}

function convertTransitions(spec) {
  const one = (t) => {
    if (t === null || typeof t !== 'object') return t;
    const out = { ...t };
    if ('guard' in t) out.guard = convertGuard(t.guard);
    if ('actions' in t) out.actions = toArray(t.actions).map(convertAction);
    return out;
  };
  return Array.isArray(spec) ? spec.map(one) : one(spec);
}

function convertState(state) {
  const out = { ...state };
  if ('entry' in state) out.entry = toArray(state.entry).map(convertAction);
  if ('exit' in state) out.exit = toArray(state.exit).map(convertAction);
  if ('on' in state) {
    out.on = {};
    for (const [k, v] of Object.entries(state.on)) out.on[k] = convertTransitions(v);
  }
  if ('always' in state) out.always = convertTransitions(state.always);
  if ('after' in state) {
    out.after = {};
    for (const [k, v] of Object.entries(state.after)) out.after[k] = convertTransitions(v);
  }
  if ('onDone' in state) out.onDone = convertTransitions(state.onDone);
  if ('output' in state) out.output = convertOutput(state.output);
  if ('states' in state) {
    out.states = {};
    for (const [k, v] of Object.entries(state.states)) out.states[k] = convertState(v);
  }
  return out;
}

function runCase(spec) {
  const traces = [];
  let budget = 0;
  const tick = () => {
    budget += 1;
    if (budget > LIMIT) throw new Error('LOOP');
  };
  const evaluations = {};
  const { actions, guards, delays } = vocabulary(traces, tick, evaluations);
  let machine;
  try {
    const config = convertState(spec.machine);
    config.context = spec.contextMode === 'object' ? JSON.parse(JSON.stringify(spec.input)) : ({ input }) => ({ ...input });
    machine = setup({ actions, guards, delays }).createMachine(config);
  } catch (err) {
    return { fatal: String(err?.message ?? err) };
  }
  const resetBudget = () => { budget = 0; };
  return spec.clock ? runClock(spec, machine, traces, evaluations, resetBudget, spec.clock === 'live')
    : runPersisted(spec, machine, traces, evaluations, resetBudget);
}

function report(actor, emitted, traces, pendingTimers) {
  const snap = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
  return [{
    status: snap.status,
    value: snap.value,
    context: snap.context,
    output: snap.output ?? null,
    emitted: [...emitted],
    traces: [...traces],
    timers: snap.status === 'active' ? pendingTimers() : [],
  }, snap];
}

function runPersisted(spec, machine, traces, evaluations, resetBudget) {
  const steps = [];
  const step = (makeActor, event) => {
    traces.length = 0;
    resetBudget();
    delete evaluations.under;
    const emitted = [];
    let error = null;
    let actor;
    try {
      actor = makeActor();
      actor.on('*', (e) => emitted.push(e));
      actor.subscribe({ error: (e) => { error = e; } });
      actor.start();
      if (event !== undefined) actor.send(event);
    } catch (err) {
      error = err;
    }
    if (error !== null) {
      steps.push({ error: String(error?.message ?? error) });
      return null;
    }
    const [result, snap] = report(actor, emitted, traces, () => []);
    steps.push(result);
    return snap;
  };
  let snapshot = step(() => createActor(machine, { input: spec.input }));
  for (const event of spec.events) {
    if (snapshot === null) break;
    const persisted = snapshot;
    snapshot = step(() => createActor(machine, { snapshot: persisted }), event);
  }
  return { steps };
}

// A SimulatedClock shared by the actors of one case, with what the checks need: the delayed event type,
// due time and arming order of every pending timeout, and a bound on the timers fired per advance.
function instrumentedClock() {
  const clock = new SimulatedClock();
  const meta = new Map(); // clock timeout id -> {event, due}
  // registered: delayed event type -> the clock id XState's scheduler can still cancel under that type
  const state = { scheduling: null, firings: 0, registered: new Map() };
  const setTimeout = clock.setTimeout.bind(clock);
  clock.setTimeout = (fn, timeout) => {
    const id = setTimeout(() => {
      state.registered.delete(meta.get(id).event); // the scheduler's callback unregisters its type
      meta.delete(id);
      state.firings += 1;
      if (state.firings > MAX_FIRINGS) throw new Error('TIMER LOOP');
      fn();
    }, timeout);
    meta.set(id, { event: state.scheduling, due: clock.now() + timeout });
    return id;
  };
  const clearTimeout = clock.clearTimeout.bind(clock);
  clock.clearTimeout = (id) => {
    meta.delete(id);
    clearTimeout(id);
  };
  // In firing order: due time, then insertion order of the clock's Map (what flushTimeouts sorts by).
  const pending = () => [...clock.timeouts.keys()]
    .map((id, index) => [index, meta.get(id)])
    .sort(([i, a], [j, b]) => a.due - b.due || i - j)
    .map(([, t]) => ({ ...t }));
  const anyDue = () => [...clock.timeouts.values()].some((t) => clock.now() - t.start >= t.timeout);
  return { clock, meta, state, pending, anyDue };
}

// Cases with delayed transitions. live: one actor for the whole case. Otherwise (restore), like Arvo, the
// actor is persisted and restored between steps, and the timers pending at the end of a step are armed
// again on the restored actor, in firing order and with their due times: what XState would do if its
// persisted snapshot kept timers (it drops them), and what our interpreter does.
function runClock(spec, machine, traces, evaluations, resetBudget, live) {
  const { clock, meta, state, pending, anyDue } = instrumentedClock();
  const emitted = [];
  let error = null;
  let actor = null;
  const { registered } = state;
  const attach = (next) => {
    const { scheduler } = next.system;
    const { schedule, cancel } = scheduler;
    scheduler.schedule = (source, target, event, delay, id) => {
      state.scheduling = event.type;
      schedule(source, target, event, delay, id);
      registered.set(id, clock._id - 1);
    };
    scheduler.cancel = (source, id) => {
      registered.delete(id);
      cancel(source, id);
    };
    next.on('*', (e) => emitted.push(e));
    next.subscribe({ error: (e) => { error ??= e; } });
  };
  const steps = [];
  const step = (run) => {
    traces.length = 0;
    emitted.length = 0;
    resetBudget();
    delete evaluations.under;
    state.firings = 0;
    try {
      run();
    } catch (err) {
      error ??= err;
    }
    if (error !== null) {
      steps.push({ error: String(error?.message ?? error) });
      return false;
    }
    const [result] = report(actor, emitted, traces, () => pending().map((t) => [t.event, t.due]));
    steps.push(result);
    return true;
  };
  const restore = () => {
    if (live) return;
    const carried = actor.getSnapshot().status === 'active' ? pending() : [];
    for (const id of carried.length ? clock.timeouts.keys() : []) {
      if (registered.get(meta.get(id).event) !== id) {
        throw new Error(`ORPHAN timer ${meta.get(id).event}: cannot be carried across a restore`);
      }
    }
    const persisted = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    actor.stop();
    clock.timeouts.clear();
    meta.clear();
    registered.clear();
    actor = createActor(machine, { snapshot: persisted, clock });
    attach(actor);
    actor.start();
    for (const timer of carried) {
      actor.system.scheduler.schedule(actor, actor, { type: timer.event }, timer.due - clock.now(), timer.event);
    }
  };
  const ok = step(() => {
    actor = createActor(machine, { input: spec.input, clock });
    attach(actor);
    actor.start();
  });
  if (!ok) return { steps };
  for (const event of spec.events) {
    const advance = event.$advance;
    const ok = step(() => {
      restore();
      if (advance === undefined) {
        actor.send(event);
        return;
      }
      clock.increment(advance);
      while (error === null && anyDue()) clock.increment(0);
    });
    if (!ok) break;
  }
  return { steps };
}

const results = request.cases.map(runCase);
process.stdout.write(JSON.stringify({ version: pkg.version, results }));
