#!/usr/bin/env node
// An example CodePipeline job worker that reports results through
// codepipeline-gateway over gRPC, so it needs no AWS credentials.
//
// For a custom-action job it reports twice, as a long-running action would:
// first a success with a continuation token (the action goes on, 0% done),
// then the final success with output variables. For a partner (third-party)
// job it reports one success with the job's client token.
//
// Every call has a deadline. Only UNAVAILABLE and RESOURCE_EXHAUSTED are
// retried (the gateway has already retried AWS throttling and 5xx itself),
// waiting at least as long as the error's google.rpc.RetryInfo asks, with
// exponential backoff and full jitter. DEADLINE_EXCEEDED is retried too,
// because a success report is safe to repeat: if the earlier attempt did land,
// the repeat fails with FAILED_PRECONDITION (INVALID_JOB_STATE), which this
// worker then treats as "already reported". See docs/clients.md.
//
// Exit status: 0 when every report was accepted (or had already landed),
// 1 when a report failed, 2 for bad usage.
'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');
const googleProtoFiles = require('google-proto-files');

const Status = grpc.status;

// The gateway's API, loaded from the repository's proto/ at run time.
const PROTO_ROOT = process.env.CPGW_PROTO_ROOT || path.resolve(__dirname, '..', '..', 'proto');
const JOB_WORKER_PROTO = 'codepipeline_gateway/v1/job_worker.proto';

// google.rpc.Status and its details, from the protos google-proto-files ships.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) => {
  // google/protobuf/* are protobufjs's built-in common types.
  if (target.startsWith('google/protobuf/')) return target;
  return path.join(path.dirname(googleProtoFiles.getProtoPath()), target);
};
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const RpcStatus = rpcRoot.lookupType('google.rpc.Status');
const DETAIL_TYPES = {
  'type.googleapis.com/google.rpc.ErrorInfo': rpcRoot.lookupType('google.rpc.ErrorInfo'),
  'type.googleapis.com/google.rpc.BadRequest': rpcRoot.lookupType('google.rpc.BadRequest'),
  'type.googleapis.com/google.rpc.RetryInfo': rpcRoot.lookupType('google.rpc.RetryInfo'),
};

const RETRYABLE = new Set([Status.UNAVAILABLE, Status.RESOURCE_EXHAUSTED]);
// A success report whose outcome is unknown may be repeated (see above).
const RETRYABLE_IF_SAFE_TO_REPEAT = new Set([Status.DEADLINE_EXCEEDED]);

const CODE_NAMES = Object.fromEntries(
  Object.entries(Status)
    .filter(([, code]) => typeof code === 'number')
    .map(([name, code]) => [code, name]),
);

function loadService() {
  const definition = protoLoader.loadSync(JOB_WORKER_PROTO, {
    includeDirs: [PROTO_ROOT],
    keepCase: false, // fields in lowerCamelCase: jobId, executionDetails, ...
    defaults: false,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).codepipeline_gateway.v1.JobWorkerService;
}

/** Decodes the google.rpc.Status in the `grpc-status-details-bin` trailer. */
function decodeDetails(error) {
  const decoded = { errorInfo: null, fieldViolations: [], retryDelaySeconds: null };
  const raw = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  if (!raw || raw.length === 0) return decoded;
  const status = RpcStatus.decode(raw[0]);
  for (const any of status.details) {
    const type = DETAIL_TYPES[any.type_url];
    if (!type) continue;
    const detail = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
    if (any.type_url.endsWith('.ErrorInfo')) {
      decoded.errorInfo = detail;
    } else if (any.type_url.endsWith('.BadRequest')) {
      for (const v of detail.fieldViolations) decoded.fieldViolations.push([v.field, v.description]);
    } else if (any.type_url.endsWith('.RetryInfo') && detail.retryDelay) {
      decoded.retryDelaySeconds = detail.retryDelay.seconds + detail.retryDelay.nanos / 1e9;
    }
  }
  return decoded;
}

function flag(details, key) {
  return Boolean(details.errorInfo && details.errorInfo.metadata[key] === 'true');
}

class ReportFailed extends Error {
  constructor(label, code, message, details) {
    super(`${label}: failed: ${CODE_NAMES[code]}: ${message}`);
    this.code = code;
    this.details = details;
  }

  describe() {
    const lines = [this.message];
    const info = this.details.errorInfo;
    if (info) {
      lines.push(`  reason: ${info.reason} (domain ${info.domain})`);
      for (const key of Object.keys(info.metadata).sort()) {
        lines.push(`  metadata: ${key}=${info.metadata[key]}`);
      }
    }
    for (const [field, description] of this.details.fieldViolations) {
      lines.push(`  field violation: ${field}: ${description}`);
    }
    if (this.details.retryDelaySeconds !== null) {
      lines.push(`  retry after: ${this.details.retryDelaySeconds.toFixed(3)}s`);
    }
    return lines.join('\n');
  }
}

/** Full-jitter exponential backoff, never shorter than RetryInfo asks. */
function backoffSeconds(policy, retry, details) {
  const cap = Math.min(policy.maxDelay, policy.baseDelay * 2 ** (retry - 1));
  return Math.max(Math.random() * cap, details.retryDelaySeconds || 0);
}

function unary(client, method, request, deadlineSeconds) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + deadlineSeconds * 1000);
    client[method](request, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

const sleep = (seconds) => new Promise((resolve) => setTimeout(resolve, seconds * 1000));

/** Calls `method` until it succeeds or fails for good. */
async function report(label, client, method, request, { deadline, policy }) {
  let earlierOutcomeUnknown = false;
  for (let attempt = 1; attempt <= policy.maxAttempts; attempt++) {
    try {
      const response = await unary(client, method, request, deadline);
      return { awsRequestId: response.awsRequestId, attempts: attempt, alreadyReported: false };
    } catch (error) {
      if (typeof error.code !== 'number') throw error;
      const details = decodeDetails(error);

      // INVALID_JOB_STATE after an attempt of unknown outcome (ours, or one of
      // the gateway's own retries): the earlier report landed. Nothing to do.
      if (
        error.code === Status.FAILED_PRECONDITION &&
        details.errorInfo &&
        details.errorInfo.reason === 'INVALID_JOB_STATE' &&
        (earlierOutcomeUnknown || flag(details, 'earlierAttemptMayHaveBeenApplied'))
      ) {
        const awsRequestId = details.errorInfo ? details.errorInfo.metadata.awsRequestId || '' : '';
        return { awsRequestId, attempts: attempt, alreadyReported: true };
      }

      // Remember when this attempt itself may have reached AWS.
      if (
        error.code === Status.DEADLINE_EXCEEDED ||
        flag(details, 'outcomeUnknown') ||
        flag(details, 'earlierAttemptMayHaveBeenApplied') ||
        // UNAVAILABLE without the gateway's ErrorInfo: the connection to the
        // gateway itself broke, perhaps after the call was sent.
        (error.code === Status.UNAVAILABLE && !details.errorInfo)
      ) {
        earlierOutcomeUnknown = true;
      }

      const retryable = RETRYABLE.has(error.code) || RETRYABLE_IF_SAFE_TO_REPEAT.has(error.code);
      if (!retryable || attempt === policy.maxAttempts) {
        throw new ReportFailed(label, error.code, error.details || '', details);
      }
      const wait = backoffSeconds(policy, attempt, details);
      const reason = details.errorInfo ? details.errorInfo.reason : 'no reason';
      process.stderr.write(
        `${label}: ${CODE_NAMES[error.code]} on attempt ${attempt} of ${policy.maxAttempts}` +
          ` (${reason}); retrying in ${wait.toFixed(2)}s\n`,
      );
      await sleep(wait);
    }
  }
  throw new Error('unreachable');
}

function printOutcome(label, outcome) {
  if (outcome.alreadyReported) {
    console.log(
      `${label}: already reported (an earlier attempt landed)` +
        ` awsRequestId=${outcome.awsRequestId || '-'} attempts=${outcome.attempts}`,
    );
  } else {
    console.log(`${label}: ok awsRequestId=${outcome.awsRequestId} attempts=${outcome.attempts}`);
  }
}

const USAGE = `usage: node worker.js [--target HOST:PORT] [--job-id ID] [--continuation-token TOKEN]
                      [--partner-job-id ID --client-token TOKEN]
                      [--output-variable KEY=VALUE]... [--percent-complete N] [--deadline SECONDS]
                      [--max-attempts N] [--round-robin]

Report CodePipeline job results through codepipeline-gateway.

  --target            gateway address, e.g. 127.0.0.1:50051 or
                      dns:///codepipeline-gateway-headless.ci.svc:50051 (env CPGW_TARGET)
  --job-id            custom-action job id (env JOB_ID)
  --partner-job-id    partner (third-party) job id (env PARTNER_JOB_ID)
  --client-token      the partner job's client token (env CLIENT_TOKEN)
  --continuation-token  the custom job's data.continuationToken, when CodePipeline handed
                      one back: resume and send only the final report (env CONTINUATION_TOKEN)
  --output-variable   output variable of the final custom-job report (repeatable;
                      default RESULT=passed)
  --percent-complete  progress sent with the continuation report (default 0)
  --deadline          seconds each call may take (env CPGW_DEADLINE, default 10)
  --max-attempts      attempts per report (default 4)
  --round-robin       balance calls over every address the target resolves to (use with dns:///)`;

function usageError(message) {
  process.stderr.write(`${USAGE}\n\nerror: ${message}\n`);
  process.exit(2);
}

function parseCommandLine(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        target: { type: 'string', default: process.env.CPGW_TARGET || '127.0.0.1:50051' },
        'job-id': { type: 'string', default: process.env.JOB_ID || '' },
        'partner-job-id': { type: 'string', default: process.env.PARTNER_JOB_ID || '' },
        'client-token': { type: 'string', default: process.env.CLIENT_TOKEN || '' },
        'continuation-token': { type: 'string', default: process.env.CONTINUATION_TOKEN || '' },
        'output-variable': { type: 'string', multiple: true, default: [] },
        'percent-complete': { type: 'string', default: '0' },
        deadline: { type: 'string', default: process.env.CPGW_DEADLINE || '10' },
        'max-attempts': { type: 'string', default: '4' },
        'round-robin': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (error) {
    usageError(error.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const outputVariables = {};
  for (const pair of values['output-variable']) {
    const at = pair.indexOf('=');
    if (at < 0) usageError(`expected KEY=VALUE, got '${pair}'`);
    outputVariables[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const number = (name) => {
    const n = Number(values[name]);
    if (!Number.isFinite(n)) usageError(`--${name} must be a number`);
    return n;
  };
  const args = {
    target: values.target,
    jobId: values['job-id'],
    partnerJobId: values['partner-job-id'],
    clientToken: values['client-token'],
    continuationToken: values['continuation-token'],
    outputVariables: Object.keys(outputVariables).length ? outputVariables : { RESULT: 'passed' },
    percentComplete: number('percent-complete'),
    deadline: number('deadline'),
    maxAttempts: number('max-attempts'),
    roundRobin: values['round-robin'],
  };
  if (!args.jobId && !args.partnerJobId) usageError('give --job-id and/or --partner-job-id');
  if (args.partnerJobId && !args.clientToken) usageError('--partner-job-id needs --client-token');
  if (args.maxAttempts < 1) usageError('--max-attempts must be at least 1');
  return args;
}

async function main(argv) {
  const args = parseCommandLine(argv);
  const policy = { maxAttempts: args.maxAttempts, baseDelay: 0.2, maxDelay: 5 };
  const options = {};
  if (args.roundRobin) {
    options['grpc.service_config'] = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });
  }
  const JobWorkerService = loadService();
  const client = new JobWorkerService(args.target, grpc.credentials.createInsecure(), options);
  const call = (label, method, request) =>
    report(label, client, method, request, { deadline: args.deadline, policy });

  try {
    if (args.jobId && !args.continuationToken) {
      // Phase 1: the action has started and is not done yet. The continuation
      // token comes back with the job's next run.
      const label = `PutJobSuccessResult ${args.jobId} continuation`;
      printOutcome(
        label,
        await call(label, 'PutJobSuccessResult', {
          jobId: args.jobId,
          continuationToken: 'phase=finish',
          executionDetails: {
            summary: 'started',
            externalExecutionId: 'node-worker-run-1',
            percentComplete: args.percentComplete, // 0 is sent: the field is optional
          },
        }),
      );
    }
    if (args.jobId) {
      // Phase 2: the final result, with output variables for later actions.
      const label = `PutJobSuccessResult ${args.jobId} final`;
      printOutcome(
        label,
        await call(label, 'PutJobSuccessResult', {
          jobId: args.jobId,
          executionDetails: {
            summary: 'finished',
            externalExecutionId: 'node-worker-run-1',
            percentComplete: 100,
          },
          outputVariables: args.outputVariables,
        }),
      );
    }
    if (args.partnerJobId) {
      const label = `PutThirdPartyJobSuccessResult ${args.partnerJobId}`;
      printOutcome(
        label,
        await call(label, 'PutThirdPartyJobSuccessResult', {
          jobId: args.partnerJobId,
          clientToken: args.clientToken,
          executionDetails: { summary: 'partner action done' },
        }),
      );
    }
  } catch (error) {
    if (!(error instanceof ReportFailed)) throw error;
    process.stderr.write(`${error.describe()}\n`);
    return 1;
  } finally {
    client.close();
  }
  return 0;
}

module.exports = { decodeDetails, report, ReportFailed };

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error) => {
      process.stderr.write(`${error.stack || error}\n`);
      process.exitCode = 1;
    },
  );
}
