#!/usr/bin/env node
// Cross-language oracle for tests/interop/test_arvo_core_interop.py.
//
// Runs the pinned arvo-core (see package.json) and speaks JSON on stdin/stdout:
//
//   node oracle.cjs create   -> prints subjects, events and feature probes that arvo-core made
//   node oracle.cjs parse    <- reads {"subjects", "events", "create", "encodeIds", "decodeIds"} from stdin,
//                            -> prints what arvo-core made of each item (ok + value, or ok=false + error)
//
// Every result is tagged with the caller's "label" so the Python side can name the failing case.
// The script never throws on bad input items: each item is handled on its own.
'use strict';

const fs = require('node:fs');
const pako = require('pako');
const path = require('node:path');
const {
  ArvoEvent,
  ArvoOrchestrationSubject,
  createArvoEvent,
  ArvoOrchestrationSubjectContentSchema,
} = require('arvo-core');
const arvoCore = require('arvo-core');

// Keys arvo-core 2.x maps to ArvoEvent fields; every other top-level key of an event JSON is passed
// as a custom CloudEvent extension, the way a generic consumer of our events would rebuild them.
const CONTEXT_KEYS = new Set([
  'id',
  'source',
  'specversion',
  'type',
  'subject',
  'datacontenttype',
  'dataschema',
  'data',
  'time',
  'to',
  'accesscontrol',
  'redirectto',
  'executionunits',
  'traceparent',
  'tracestate',
]);

const FIXED_TIME = '2025-01-02T03:04:05.678+00:00';
const UNICODE_DATA = {
  greeting: 'héllo wörld — 世界 🎉',
  quote: 'she said "hi"\\ and left\n\ttab',
  control: '\u0001\u001f\u007f',
  separators: 'line\u2028para\u2029end',
  numbers: [0, -1, 1.5, 0.1, 12345678901234, 9007199254740991],
  nested: { empty: {}, list: [], flag: false, nothing: null },
};

function versions() {
  const pkg = JSON.parse(
    fs.readFileSync(path.join(path.dirname(require.resolve('arvo-core')), '..', 'package.json'), 'utf8'),
  );
  return { 'arvo-core': pkg.version, node: process.versions.node };
}

function features() {
  const executionShape = ArvoOrchestrationSubjectContentSchema.shape.execution.shape;
  const probe = createArvoEvent(
    {
      source: 'com.probe.source',
      type: 'com.probe.event',
      subject: 'probe',
      data: {},
      parentid: 'parent',
      domain: 'probe.domain',
      time: FIXED_TIME,
    },
    undefined,
    { disable: true },
  ).toJSON();
  return {
    createArvoEventId: typeof arvoCore.createArvoEventId === 'function',
    parseArvoEventId: typeof arvoCore.parseArvoEventId === 'function',
    ArvoDomain: typeof arvoCore.ArvoDomain !== 'undefined',
    subjectSchemaHasExecutionDomain: Object.hasOwn(executionShape, 'domain'),
    subjectSchemaUnknownKeys: ArvoOrchestrationSubjectContentSchema._def.unknownKeys,
    createArvoEventKeepsParentid: Object.hasOwn(probe, 'parentid'),
    createArvoEventKeepsDomain: Object.hasOwn(probe, 'domain'),
    eventKeys: Object.keys(probe),
  };
}

function subjectEntry(label, subject) {
  return { label, subject, content: ArvoOrchestrationSubject.parse(subject) };
}

function eventEntry(label, event) {
  return { label, json: event.toString() };
}

function create() {
  const vectorNoDomain = {
    orchestrator: { name: 'arvo.orc.test', version: '0.0.1' },
    execution: { id: '123e4567-e89b-12d3-a456-426614174000', initiator: 'com.test.service' },
    meta: {},
  };
  const unicodeMeta = {
    orchestrator: { name: 'arvo.orc.unicode', version: '1.2.3' },
    execution: { id: 'exec-ü-世界', initiator: 'com.unicode.initiator' },
    meta: { redirectto: 'arvo.orc.parent', note: 'héllo 🎉 "quoted" \\ back\nnl\u0001' },
  };
  const parent = ArvoOrchestrationSubject.new({
    orchestator: 'arvo.orc.parent',
    version: '1.0.0',
    initiator: 'com.parent.initiator',
    meta: { redirectto: 'com.reply.here', keep: 'parent' },
  });
  const child = ArvoOrchestrationSubject.from({
    orchestator: 'arvo.orc.child',
    version: '2.0.0',
    subject: parent,
    meta: { keep: 'child', extra: 'x' },
  });
  const wildcard = ArvoOrchestrationSubject.new({
    orchestator: 'arvo.orc.wild',
    version: null,
    initiator: 'com.wild.initiator',
  });

  const subjects = [
    subjectEntry('create_2x_vector_no_domain', ArvoOrchestrationSubject.create(vectorNoDomain)),
    subjectEntry('create_unicode_meta', ArvoOrchestrationSubject.create(unicodeMeta)),
    subjectEntry('new_with_meta', parent),
    subjectEntry('from_parent', child),
    subjectEntry('new_wildcard_version', wildcard),
  ];

  const events = [
    eventEntry(
      'full',
      createArvoEvent(
        {
          id: 'fixed-id-1',
          source: 'com.test.source',
          type: 'com.test.event.created',
          subject: parent,
          data: UNICODE_DATA,
          dataschema: '#/test/contract/1.0.0',
          to: 'com.test.consumer',
          accesscontrol: 'role:admin;team:core',
          redirectto: 'com.test.redirect',
          executionunits: 1.25,
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
          tracestate: 'vendor=value',
          time: FIXED_TIME,
        },
        { customstr: 'value', customflag: true, customnum: 42, customnull: null },
        { disable: true },
      ),
    ),
    eventEntry(
      // JSON number formatting: JS writes 1e+21 where orjson writes 1e21 (same value).
      'float_formats',
      createArvoEvent(
        {
          id: 'fixed-id-6',
          source: 'com.test.source',
          type: 'com.test.event.floats',
          subject: 'floats',
          data: { big: 1e21, small: 1e-7, negzero: -0, frac: 0.1, whole: 5.0, max: 9007199254740991 },
          executionunits: 2.5e-3,
          time: FIXED_TIME,
        },
        undefined,
        { disable: true },
      ),
    ),
    eventEntry(
      'minimal_defaults',
      createArvoEvent(
        { source: 'com.min.source', type: 'com.min.event', subject: 'plain-subject', data: {} },
        undefined,
        { disable: true },
      ),
    ),
    eventEntry(
      'encodes_uri_fields',
      createArvoEvent(
        {
          id: 'fixed-id-3',
          source: 'test source with spaces',
          type: 'com.encode.event',
          subject: 'subject with spaces/é',
          data: { a: 1 },
          redirectto: 'redirect to/é',
          dataschema: '#/schema with space/0.0.1',
          executionunits: 0,
          time: FIXED_TIME,
        },
        undefined,
        { disable: true },
      ),
    ),
    eventEntry(
      // 3.x-only inputs: 2.x createArvoEvent drops them silently.
      'ignores_parentid_and_domain',
      createArvoEvent(
        {
          id: 'fixed-id-4',
          source: 'com.test.source',
          type: 'com.test.event.other',
          subject: child,
          data: { n: 1 },
          parentid: 'parent-event-id',
          domain: 'external.human',
          time: FIXED_TIME,
        },
        undefined,
        { disable: true },
      ),
    ),
    eventEntry(
      'non_arvo_content_type_without_to_default',
      new ArvoEvent(
        {
          id: 'fixed-id-5',
          source: 'com.test.source',
          specversion: '1.0',
          type: 'com.test.plain.json',
          subject: 'plain',
          datacontenttype: 'application/json',
          dataschema: null,
          time: '2024-02-29T23:59:59Z',
          to: null,
          accesscontrol: null,
          redirectto: null,
          executionunits: null,
          traceparent: null,
          tracestate: null,
        },
        { ok: true },
      ),
    ),
  ];

  return { versions: versions(), features: features(), subjects, events };
}

function errorText(e) {
  return e && e.message ? String(e.message) : String(e);
}

function parseSubject(item) {
  try {
    return { label: item.label, ok: true, content: ArvoOrchestrationSubject.parse(item.subject) };
  } catch (e) {
    return { label: item.label, ok: false, error: errorText(e) };
  }
}

function childFrom(item) {
  // A 2.x orchestrator starting a child of one of our subjects.
  try {
    const child = ArvoOrchestrationSubject.from({
      orchestator: 'arvo.orc.node.child',
      version: '3.0.0',
      subject: item.subject,
      meta: { node: 'child' },
    });
    return { label: item.label, ok: true, subject: child, content: ArvoOrchestrationSubject.parse(child) };
  } catch (e) {
    return { label: item.label, ok: false, error: errorText(e) };
  }
}

function parseEvent(item) {
  try {
    const raw = JSON.parse(item.json);
    const context = {};
    const extensions = {};
    for (const [key, value] of Object.entries(raw)) {
      if (key === 'data') continue;
      if (CONTEXT_KEYS.has(key)) context[key] = value;
      else extensions[key] = value;
    }
    const event = new ArvoEvent(context, raw.data, extensions);
    return { label: item.label, ok: true, json: event.toString(), extensions: event.extensions };
  } catch (e) {
    return { label: item.label, ok: false, error: errorText(e) };
  }
}

// arvo-core 2.x has no createArvoEventId/parseArvoEventId; the 3.x ARVO_MANAGED id is the subject codec
// (base64 of pako.deflate of compact JSON), so these run it with the same pako arvo-core uses.
function encodeId(item) {
  const bytes = pako.deflate(new TextEncoder().encode(JSON.stringify(item.content)));
  return { label: item.label, ok: true, id: Buffer.from(bytes).toString('base64') };
}

function decodeId(item) {
  try {
    const text = new TextDecoder().decode(pako.inflate(Buffer.from(item.id, 'base64')));
    return { label: item.label, ok: true, content: JSON.parse(text) };
  } catch (e) {
    return { label: item.label, ok: false, error: errorText(e) };
  }
}

function createSubject(item) {
  try {
    return { label: item.label, ok: true, subject: ArvoOrchestrationSubject.create(item.content) };
  } catch (e) {
    return { label: item.label, ok: false, error: errorText(e) };
  }
}

function parse(input) {
  return {
    versions: versions(),
    subjects: (input.subjects ?? []).map(parseSubject),
    children: (input.subjects ?? []).map(childFrom),
    events: (input.events ?? []).map(parseEvent),
    create: (input.create ?? []).map(createSubject),
    encodeIds: (input.encodeIds ?? []).map(encodeId),
    decodeIds: (input.decodeIds ?? []).map(decodeId),
  };
}

function main() {
  const mode = process.argv[2];
  let result;
  if (mode === 'create') {
    result = create();
  } else if (mode === 'parse') {
    result = parse(JSON.parse(fs.readFileSync(0, 'utf8')));
  } else {
    process.stderr.write('usage: node oracle.cjs create | parse < input.json\n');
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main();
