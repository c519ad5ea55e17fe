// Differential-conformance oracle: runs JSON-described machines with the real XState (pinned 5.24.0).
//
// stdin:  {"limit": <vocabulary calls allowed per step>, "cases": [{"machine", "input", "contextMode", "events"}]}
// stdout: {"version": "<xstate version>", "results": [{"steps": [step...]} | {"fatal": "<message>"}]}
//   step = {"status", "value", "context", "output", "emitted", "traces"} or {"error": "<message>"} (last step)
//
// Between steps the actor is persisted with getPersistedSnapshot(), JSON round-tripped and restored with
// createActor(machine, {snapshot}), exactly like Arvo's MachineExecutionEngine. The machine JSON uses a
// small marker vocabulary (see tests/interop/test_xstate_conformance.py, which implements the same
// vocabulary in Python): actions/guards are {"type", "params"} objects naming the functions below;
// {"$and"|"$or": [...]}, {"$not": g} are guard combinators; {"$params": "fromContext", ...} is a params
// function; {"$output": "root"|"final", ...} marks output mappers.
import { readFileSync } from 'node:fs';
import { and, assign, createActor, emit, not, or, setup } from 'xstate';

const pkg = JSON.parse(readFileSync(new URL('./node_modules/xstate/package.json', import.meta.url), 'utf8'));
const request = JSON.parse(readFileSync(0, 'utf8'));
const LIMIT = request.limit ?? 20000;

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
  return { actions, guards };
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
  const { actions, guards } = vocabulary(traces, tick, evaluations);
  let machine;
  try {
    const config = convertState(spec.machine);
    config.context = spec.contextMode === 'object' ? JSON.parse(JSON.stringify(spec.input)) : ({ input }) => ({ ...input });
    machine = setup({ actions, guards }).createMachine(config);
  } catch (err) {
    return { fatal: String(err?.message ?? err) };
  }
  const steps = [];
  const step = (makeActor, event) => {
    traces.length = 0;
    budget = 0;
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
    const snap = JSON.parse(JSON.stringify(actor.getPersistedSnapshot()));
    steps.push({
      status: snap.status,
      value: snap.value,
      context: snap.context,
      output: snap.output ?? null,
      emitted,
      traces: [...traces],
    });
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

const results = request.cases.map(runCase);
process.stdout.write(JSON.stringify({ version: pkg.version, results }));
