#!/usr/bin/env node
// An example CodePipeline job worker that talks to AWS CodePipeline only
// through codepipeline-gateway over gRPC, so it needs no AWS credentials.
//
// It runs in one of two ways:
//
// * As a complete job worker (`--poll custom` or `--poll partner`): a loop
//   that polls for jobs of one action type, claims each with its nonce
//   (AcknowledgeJob; a partner job's nonce comes from
//   GetThirdPartyJobDetails), does the work (`doTheWork` below: replace it
//   with yours) and reports progress with a continuation token, success, or
//   failure. Partner jobs need no client token: the gateway's client-token
//   map supplies it. The loop ends after `--max-jobs` jobs, after one poll
//   with `--once`, after `--idle-timeout` seconds without a job, or on
//   SIGTERM/SIGINT (after the job in hand).
// * As a reporter for jobs whose ids it is given (`--job-id`, and
//   `--partner-job-id` with `--client-token`): a custom job gets a success
//   with a continuation token (the action goes on, 0% done; CodePipeline
//   closes the job and hands the token back in a continuation job), or, given
//   `--continuation-token` (the job brought one back), the final success with
//   output variables; a partner job gets a success.
//
// Every call has a deadline. Only UNAVAILABLE and RESOURCE_EXHAUSTED are
// retried (the gateway has already retried AWS throttling and 5xx itself),
// waiting at least as long as the error's google.rpc.RetryInfo asks, with
// exponential backoff and full jitter. DEADLINE_EXCEEDED is retried too,
// because every call here is safe to repeat: when an earlier attempt did
// land, a repeated report fails with FAILED_PRECONDITION (INVALID_JOB_STATE)
// and a repeated acknowledgement with FAILED_PRECONDITION (INVALID_NONCE),
// which this worker then reads as "already done". INVALID_NONCE without such
// an earlier attempt means that another worker claimed the job: it is
// skipped. See docs/clients.md.
//
// Exit status: 0 when every call was accepted or had already landed (skipped
// jobs included), 1 when a call failed for good, 2 for bad usage.
'use strict';

const fs = require('node:fs');
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
// A call whose outcome is unknown may be repeated (see above).
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

/** A call that failed for good (after any retries). */
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

// What a repeated call answers when its earlier attempt landed.
const REPORT_LANDED = 'INVALID_JOB_STATE'; // the job already has this result
const ACK_LANDED = 'INVALID_NONCE'; // the nonce was already used, by this worker
const LASTED_MS = 10000; // a subscription that ended after this starts its backoff over

/**
 * Calls `method` until it succeeds or fails for good.
 *
 * `landedReason` is the FAILED_PRECONDITION reason that, after an attempt of
 * unknown outcome, means that attempt landed: INVALID_JOB_STATE for a report,
 * INVALID_NONCE for an acknowledgement, null for reads and polls.
 */
async function call(label, client, method, request, { deadline, policy, landedReason = REPORT_LANDED }) {
  let earlierOutcomeUnknown = false;
  for (let attempt = 1; attempt <= policy.maxAttempts; attempt++) {
    try {
      const response = await unary(client, method, request, deadline);
      return { awsRequestId: response.awsRequestId, attempts: attempt, alreadyDone: false, response };
    } catch (error) {
      if (typeof error.code !== 'number') throw error;
      const details = decodeDetails(error);

      // The call's own "already done" answer after an attempt of unknown
      // outcome (ours, or one of the gateway's own retries): the earlier
      // attempt landed. Nothing more to do.
      if (
        landedReason !== null &&
        error.code === Status.FAILED_PRECONDITION &&
        details.errorInfo &&
        details.errorInfo.reason === landedReason &&
        (earlierOutcomeUnknown || flag(details, 'earlierAttemptMayHaveBeenApplied'))
      ) {
        const awsRequestId = details.errorInfo.metadata.awsRequestId || '';
        return { awsRequestId, attempts: attempt, alreadyDone: true, response: null };
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

/** Sends a success or failure report (see `call`). */
function report(label, client, method, request, { deadline, policy }) {
  return call(label, client, method, request, { deadline, policy, landedReason: REPORT_LANDED });
}

function printOutcome(label, outcome, already = 'already reported') {
  if (outcome.alreadyDone) {
    console.log(
      `${label}: ${already} (an earlier attempt landed)` +
        ` awsRequestId=${outcome.awsRequestId || '-'} attempts=${outcome.attempts}`,
    );
  } else {
    console.log(`${label}: ok awsRequestId=${outcome.awsRequestId} attempts=${outcome.attempts}`);
  }
}

// ---------------------------------------------------------------------------
// The work. Replace `doTheWork` with what your action really does.
//
// `job` is { kind: 'custom' | 'partner', id, data, clientId }. It returns one of
//   { progress: { continuationToken, summary, percentComplete } }  not done yet:
//       CodePipeline hands the token back in the data of a continuation job
//   { success: { summary, outputVariables } }   (output variables: custom jobs only)
//   { failure: { type, message } }

/**
 * A stand-in for real work, steered by the action's configuration.
 *
 * `Mode=fail` (or `Fail=true`) fails the job, with `FailureMessage` if set.
 * Otherwise a job without a continuation token starts the work and asks to be
 * continued; the continuation job, which carries the token, finishes it.
 */
function doTheWork(job, outputVariables) {
  const configuration = (job.data.actionConfiguration || {}).configuration || {};
  if ((configuration.Mode || '').toLowerCase() === 'fail' || (configuration.Fail || '').toLowerCase() === 'true') {
    return {
      failure: {
        type: 'FAILURE_TYPE_JOB_FAILED',
        message: configuration.FailureMessage || 'the action configuration asked for a failure (Mode=fail)',
      },
    };
  }
  if (!job.data.continuationToken) {
    return { progress: { continuationToken: 'phase=finish', summary: 'started', percentComplete: 0 } };
  }
  return { success: { summary: `finished (${job.data.continuationToken})`, outputVariables } };
}

// ---------------------------------------------------------------------------
// The polling worker.

class Worker {
  constructor(client, settings, { deadline, policy }) {
    this.client = client;
    this.settings = settings;
    this.deadline = deadline;
    this.policy = policy;
    this.stopping = false;
    this.wake = null;
    this.counts = { succeeded: 0, continued: 0, failed: 0, skipped: 0, error: 0 };
  }

  stop() {
    this.stopping = true;
    if (this.wake) this.wake();
  }

  call(label, method, request, landedReason = null) {
    return call(label, this.client, method, request, {
      deadline: this.deadline,
      policy: this.policy,
      landedReason,
    });
  }

  /** Polls and works until a stop condition; resolves to the exit status. */
  async run() {
    const s = this.settings;
    let handled = 0;
    let idleSince = Date.now();
    while (!this.stopping) {
      if (s.maxJobs !== null && handled >= s.maxJobs) break;
      // Never ask for more jobs than will be worked on: a polled job that is
      // never acknowledged waits for CodePipeline's timeout.
      const batch = s.maxJobs === null ? s.maxBatchSize : Math.min(s.maxBatchSize, s.maxJobs - handled);
      let jobs;
      try {
        jobs = await this.poll(batch);
      } catch (error) {
        if (!(error instanceof ReportFailed)) throw error;
        process.stderr.write(`${error.describe()}\n`);
        this.counts.error += 1;
        break; // a poll that fails for good is a configuration problem
      }
      for (const job of jobs) {
        this.counts[await this.handle(job)] += 1;
        handled += 1;
      }
      if (jobs.length) idleSince = Date.now();
      if (s.once) break;
      if (!jobs.length) {
        if (s.idleTimeout !== null && Date.now() - idleSince >= s.idleTimeout * 1000) break;
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, s.pollInterval * 1000);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = null;
      }
    }
    return this.finish(handled);
  }

  /** Prints what became of the jobs; returns the exit status. */
  finish(handled) {
    const c = this.counts;
    console.log(
      `done: ${handled} jobs (succeeded ${c.succeeded}, continued ${c.continued},` +
        ` failed ${c.failed}, skipped ${c.skipped}, errors ${c.error})`,
    );
    return c.error ? 1 : 0;
  }

  /**
   * Works jobs the gateway pushes (SubscribeJobs / SubscribeThirdPartyJobs)
   * instead of polling: credit 1 (one job at a time), one more credit after
   * each job. The gateway ends a subscription with UNAVAILABLE when its
   * connection closes (its shutdown, maximum connection age): subscribe
   * again, after a jittered backoff. Resolves to the exit status.
   */
  async subscribe() {
    const s = this.settings;
    const name = s.mode === 'custom' ? 'SubscribeJobs' : 'SubscribeThirdPartyJobs';
    let handled = 0;
    let retries = 0;
    let lastJob = Date.now();
    while (!this.stopping && (s.maxJobs === null || handled < s.maxJobs)) {
      const stream = this.client[name]();
      const opened = Date.now();
      const jobs = [];
      let ended = null; // the error the stream ended with, or 'end'
      let notify = null;
      const wakeUp = () => {
        if (notify) notify();
      };
      stream.on('data', (message) => {
        jobs.push(message.job);
        wakeUp();
      });
      stream.on('error', (error) => {
        ended = ended || error;
        wakeUp();
      });
      stream.on('end', () => {
        ended = ended || 'end';
        wakeUp();
      });
      stream.write({ actionTypeId: s.actionTypeId, credit: 1, target: s.pollTarget });
      console.log(`${name}: subscribed`);
      this.wake = wakeUp;
      let outcome = null;
      while (outcome === null) {
        if (this.stopping) {
          outcome = 'stop';
        } else if (jobs.length) {
          const job = jobs.shift();
          retries = 0;
          console.log(`${name}: job ${s.mode === 'custom' ? job.id : job.jobId}`);
          this.counts[await this.handle(job)] += 1;
          handled += 1;
          lastJob = Date.now();
          if (s.maxJobs !== null && handled >= s.maxJobs) outcome = 'stop';
          else if (!ended) stream.write({ credit: 1 });
        } else if (ended) {
          outcome = ended;
        } else {
          const idleLeft = s.idleTimeout === null ? null : s.idleTimeout * 1000 - (Date.now() - lastJob);
          if (idleLeft !== null && idleLeft <= 0) {
            this.stopping = true;
            continue;
          }
          await new Promise((resolve) => {
            const timer = idleLeft === null ? null : setTimeout(resolve, idleLeft);
            notify = () => {
              if (timer) clearTimeout(timer);
              resolve();
            };
          });
          notify = null;
        }
      }
      this.wake = null;
      stream.removeAllListeners('error');
      stream.on('error', () => {}); // the cancellation below
      stream.cancel();
      if (outcome === 'stop') break;
      const error = outcome === 'end' ? null : outcome;
      const details = error ? decodeDetails(error) : decodeDetails({});
      if (error && !RETRYABLE.has(error.code)) {
        process.stderr.write(`${new ReportFailed(name, error.code, error.details, details).describe()}\n`);
        this.counts.error += 1;
        break;
      }
      // A subscription that lasted (until the connection's maximum age, say)
      // starts the backoff over.
      retries = Date.now() - opened >= LASTED_MS ? 1 : retries + 1;
      const wait = backoffSeconds(this.policy, retries, details);
      const why = error ? `${CODE_NAMES[error.code]}: ${error.details}` : 'OK';
      console.log(`${name}: ended: ${why}; subscribing again in ${wait.toFixed(2)}s`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, wait * 1000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return this.finish(handled);
  }

  async poll(batch) {
    const s = this.settings;
    const name = s.mode === 'custom' ? 'PollForJobs' : 'PollForThirdPartyJobs';
    const outcome = await this.call(name, name, {
      actionTypeId: s.actionTypeId,
      maxBatchSize: batch,
      target: s.pollTarget,
    });
    const jobs = outcome.response.jobs || [];
    if (jobs.length) {
      console.log(
        `${name}: ${jobs.length} job${jobs.length === 1 ? '' : 's'}` +
          ` awsRequestId=${outcome.awsRequestId} attempts=${outcome.attempts}`,
      );
    }
    return jobs;
  }

  /** Claims, works on and reports one polled job; resolves to what became of it. */
  async handle(polled) {
    try {
      const job = await this.claim(polled);
      if (job === null) return 'skipped';
      let result;
      try {
        result = await doTheWork(job, this.settings.outputVariables);
      } catch (error) {
        // The work broke: that is a failed job.
        const message = `the work raised ${error && error.name}: ${error && error.message}`;
        result = { failure: { type: 'FAILURE_TYPE_JOB_FAILED', message: message.slice(0, 5000) } };
      }
      return await this.sendResult(job, result);
    } catch (error) {
      if (!(error instanceof ReportFailed)) throw error;
      process.stderr.write(`${error.describe()}\n`);
      return 'error';
    }
  }

  /** Acknowledges the job; resolves to null when another worker has it. */
  async claim(polled) {
    let job;
    let label;
    let method;
    let request;
    if (this.settings.mode === 'custom') {
      // target: the gateway target (AWS account) the job came from, sent back
      // on every call about it so that any replica reaches it.
      job = { kind: 'custom', id: polled.id, data: polled.data || {}, clientId: '', target: polled.target || '' };
      label = `AcknowledgeJob ${job.id}`;
      method = 'AcknowledgeJob';
      request = { jobId: job.id, nonce: polled.nonce, target: job.target };
    } else {
      // A partner poll returns only ids: the data and the nonce come with the
      // details. No client token: the gateway fills it in from its map.
      // clientId lets any replica of the gateway do that.
      const detailsLabel = `GetThirdPartyJobDetails ${polled.jobId}`;
      const outcome = await this.call(detailsLabel, 'GetThirdPartyJobDetails', {
        jobId: polled.jobId,
        clientId: polled.clientId,
        target: polled.target || '',
      });
      printOutcome(detailsLabel, outcome);
      const details = outcome.response.jobDetails || {};
      job = {
        kind: 'partner',
        id: polled.jobId,
        data: details.data || {},
        clientId: polled.clientId,
        target: polled.target || '',
      };
      label = `AcknowledgeThirdPartyJob ${job.id}`;
      method = 'AcknowledgeThirdPartyJob';
      request = { jobId: job.id, nonce: details.nonce, clientId: job.clientId, target: job.target };
    }
    let outcome;
    try {
      outcome = await this.call(label, method, request, ACK_LANDED);
    } catch (error) {
      if (
        error instanceof ReportFailed &&
        error.code === Status.FAILED_PRECONDITION &&
        error.details.errorInfo &&
        error.details.errorInfo.reason === 'INVALID_NONCE'
      ) {
        // No earlier attempt of ours may have landed: the nonce is stale
        // because another worker claimed the job. Leave it alone.
        console.log(`${label}: skipped: another worker has claimed the job (INVALID_NONCE)`);
        return null;
      }
      throw error;
    }
    printOutcome(label, outcome, 'already acknowledged by this worker');
    return job;
  }

  async sendResult(job, result) {
    const context = job.data.pipelineContext || {};
    const runId = `node-worker-${(context.action && context.action.actionExecutionId) || job.id}`;
    const custom = job.kind === 'custom';
    const partnerFields = { target: job.target || '', ...(custom ? {} : { clientId: job.clientId }) };
    let method;
    let label;
    let request;
    let kept;
    if (result.failure) {
      method = custom ? 'PutJobFailureResult' : 'PutThirdPartyJobFailureResult';
      label = `${method} ${job.id}`;
      request = {
        jobId: job.id,
        ...partnerFields,
        failureDetails: { ...result.failure, externalExecutionId: runId },
      };
      kept = 'failed';
    } else {
      const progress = result.progress;
      const done = result.success;
      method = custom ? 'PutJobSuccessResult' : 'PutThirdPartyJobSuccessResult';
      label = `${method} ${job.id} ${progress ? 'continuation' : 'final'}`;
      request = {
        jobId: job.id,
        ...partnerFields,
        executionDetails: {
          summary: (progress || done).summary,
          externalExecutionId: runId,
          percentComplete: progress ? progress.percentComplete : 100, // 0 is sent: the field is optional
        },
      };
      if (progress) request.continuationToken = progress.continuationToken;
      if (custom && done && done.outputVariables && Object.keys(done.outputVariables).length) {
        request.outputVariables = done.outputVariables;
      }
      kept = progress ? 'continued' : 'succeeded';
    }
    printOutcome(label, await this.call(label, method, request, REPORT_LANDED));
    return kept;
  }
}

// ---------------------------------------------------------------------------
// Report-only mode: results for jobs whose ids are given.

async function reportGivenJobs(client, args, policy) {
  const send = (label, method, request) =>
    report(label, client, method, request, { deadline: args.deadline, policy });
  try {
    if (args.jobId && !args.continuationToken) {
      // Phase 1: the action has started and is not done yet. This closes the
      // job; CodePipeline hands the token back in a new (continuation) job,
      // reported on with --continuation-token.
      const label = `PutJobSuccessResult ${args.jobId} continuation`;
      printOutcome(
        label,
        await send(label, 'PutJobSuccessResult', {
          jobId: args.jobId,
          continuationToken: 'phase=finish',
          executionDetails: {
            summary: 'started',
            externalExecutionId: 'node-worker-run-1',
            percentComplete: args.percentComplete, // 0 is sent: the field is optional
          },
        }),
      );
    } else if (args.jobId) {
      // Phase 2, on the job that brought the token back: the final result,
      // with output variables for later actions.
      const label = `PutJobSuccessResult ${args.jobId} final`;
      printOutcome(
        label,
        await send(label, 'PutJobSuccessResult', {
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
        await send(label, 'PutThirdPartyJobSuccessResult', {
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
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Command line.

const CATEGORIES = ['Source', 'Build', 'Deploy', 'Test', 'Invoke', 'Approval', 'Compute'];
const DEFAULT_ACTION_TYPES = {
  // those of `codepipeline-gateway dev`
  custom: ['Build', 'CpgwDevBuilder'],
  partner: ['Deploy', 'CpgwDevPartner'],
};

const USAGE = `usage: node worker.js [--target HOST:PORT] --poll custom|partner [--category C]
                      [--provider P] [--action-version V] [--max-jobs N] [--once]
                      [--idle-timeout SECONDS] [--poll-interval SECONDS] [--max-batch-size N]
                      [--subscribe]
                      [--output-variable KEY=VALUE]... [--deadline SECONDS] [--max-attempts N]
                      [--round-robin] [--authority NAME]
       node worker.js [--target HOST:PORT] [--job-id ID] [--continuation-token TOKEN]
                      [--partner-job-id ID --client-token TOKEN]
                      [--output-variable KEY=VALUE]... [--percent-complete N] [--deadline SECONDS]
                      [--max-attempts N] [--round-robin] [--authority NAME]

A CodePipeline job worker that works through codepipeline-gateway.

  --target            gateway address, e.g. 127.0.0.1:50051 or
                      dns:///codepipeline-gateway-headless.ci.svc:50051 (env CPGW_TARGET)

polling worker:
  --poll              poll for jobs of a custom or a partner action type and work on them
                      (env CPGW_POLL)
  --category          the action type's category: ${CATEGORIES.join(', ')}
                      (default Build for custom, Deploy for partner)
  --provider          the action type's provider (default CpgwDevBuilder / CpgwDevPartner,
                      as in dev mode)
  --action-version    the action type's version (default 1)
  --max-jobs          stop after this many jobs (default: no limit)
  --once              poll once, work on what it returns, stop
  --idle-timeout      stop after this many seconds without a job (default: never)
  --poll-interval     seconds between empty polls (default 1)
  --max-batch-size    jobs per poll (default 1)
  --poll-target       the gateway target (an AWS account and region the operator named) to
                      poll; default: the one the gateway maps the action type to, else its
                      own (env CPGW_POLL_TARGET)
  --subscribe         have the gateway push jobs (SubscribeJobs) instead of polling; reconnects
                      with backoff when the subscription ends (env CPGW_SUBSCRIBE=true)

reporting for given jobs:
  --job-id            custom-action job id (env JOB_ID)
  --partner-job-id    partner (third-party) job id (env PARTNER_JOB_ID)
  --client-token      the partner job's client token (env CLIENT_TOKEN)
  --continuation-token  the custom job's data.continuationToken, when CodePipeline handed
                      one back: resume and send only the final report (env CONTINUATION_TOKEN)
  --percent-complete  progress sent with the continuation report (default 0)

both:
  --output-variable   output variable of a final custom-job report (repeatable;
                      default RESULT=passed)
  --deadline          seconds each call may take (env CPGW_DEADLINE, default 10)
  --max-attempts      attempts per call (default 4)
  --round-robin       balance calls over every address the target resolves to (use with dns:///)
  --authority         the :authority to send instead of the target's name, e.g. for a list of
                      addresses such as ipv4:10.0.0.1:50051,10.0.0.2:50051 (env CPGW_AUTHORITY)
  --token-file        a file holding the bearer token to send (a projected service-account
                      token, re-read on every call; env CPGW_TOKEN_FILE)

TLS (a gateway that serves TLS; plaintext without --tls-ca-file):
  --tls-ca-file       CA certificates (PEM) to trust for the gateway (env CPGW_TLS_CA_FILE)
  --tls-cert-file     this worker's client certificate (PEM), for mTLS (env CPGW_TLS_CERT_FILE)
  --tls-key-file      the client certificate's key (PEM) (env CPGW_TLS_KEY_FILE)
  --tls-server-name   the name to expect in the gateway's certificate (env CPGW_TLS_SERVER_NAME)`;

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
        poll: { type: 'string', default: process.env.CPGW_POLL || '' },
        category: { type: 'string', default: '' },
        provider: { type: 'string', default: '' },
        'action-version': { type: 'string', default: '1' },
        'max-jobs': { type: 'string', default: '' },
        once: { type: 'boolean', default: false },
        subscribe: { type: 'boolean', default: process.env.CPGW_SUBSCRIBE === 'true' },
        'idle-timeout': { type: 'string', default: '' },
        'poll-interval': { type: 'string', default: '1' },
        'max-batch-size': { type: 'string', default: '1' },
        'poll-target': { type: 'string', default: process.env.CPGW_POLL_TARGET || '' },
        'job-id': { type: 'string', default: process.env.JOB_ID || '' },
        'partner-job-id': { type: 'string', default: process.env.PARTNER_JOB_ID || '' },
        'client-token': { type: 'string', default: process.env.CLIENT_TOKEN || '' },
        'continuation-token': { type: 'string', default: process.env.CONTINUATION_TOKEN || '' },
        'output-variable': { type: 'string', multiple: true, default: [] },
        'percent-complete': { type: 'string', default: '0' },
        deadline: { type: 'string', default: process.env.CPGW_DEADLINE || '10' },
        'max-attempts': { type: 'string', default: '4' },
        'round-robin': { type: 'boolean', default: false },
        authority: { type: 'string', default: process.env.CPGW_AUTHORITY || '' },
        'token-file': { type: 'string', default: process.env.CPGW_TOKEN_FILE || '' },
        'tls-ca-file': { type: 'string', default: process.env.CPGW_TLS_CA_FILE || '' },
        'tls-cert-file': { type: 'string', default: process.env.CPGW_TLS_CERT_FILE || '' },
        'tls-key-file': { type: 'string', default: process.env.CPGW_TLS_KEY_FILE || '' },
        'tls-server-name': { type: 'string', default: process.env.CPGW_TLS_SERVER_NAME || '' },
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
    if (values[name] === '' || !Number.isFinite(n)) usageError(`--${name} must be a number`);
    return n;
  };
  const optionalNumber = (name) => (values[name] === '' ? null : number(name));
  const args = {
    target: values.target,
    poll: values.poll,
    jobId: values['job-id'],
    partnerJobId: values['partner-job-id'],
    clientToken: values['client-token'],
    continuationToken: values['continuation-token'],
    outputVariables: Object.keys(outputVariables).length ? outputVariables : { RESULT: 'passed' },
    percentComplete: number('percent-complete'),
    deadline: number('deadline'),
    maxAttempts: number('max-attempts'),
    roundRobin: values['round-robin'],
    authority: values.authority,
    tokenFile: values['token-file'],
    tls: {
      caFile: values['tls-ca-file'],
      certFile: values['tls-cert-file'],
      keyFile: values['tls-key-file'],
      serverName: values['tls-server-name'],
    },
  };
  if (Boolean(args.tls.certFile) !== Boolean(args.tls.keyFile)) {
    usageError('--tls-cert-file and --tls-key-file go together');
  }
  if (args.tls.certFile && !args.tls.caFile) usageError('--tls-cert-file needs --tls-ca-file');
  if (args.maxAttempts < 1) usageError('--max-attempts must be at least 1');
  if (values.subscribe && !args.poll) {
    usageError('--subscribe needs --poll custom|partner (the kind of jobs to subscribe to)');
  }
  if (values.subscribe && values.once) {
    usageError('--subscribe and --once do not go together: a subscription waits for jobs');
  }
  if (args.poll) {
    if (!(args.poll in DEFAULT_ACTION_TYPES)) usageError(`--poll must be custom or partner, not '${args.poll}'`);
    if (args.jobId || args.partnerJobId) {
      usageError('--poll works on the jobs it polls: leave out --job-id and --partner-job-id');
    }
    const [defaultCategory, defaultProvider] = DEFAULT_ACTION_TYPES[args.poll];
    const category = values.category || defaultCategory;
    if (!CATEGORIES.includes(category)) usageError(`--category must be one of ${CATEGORIES.join(', ')}`);
    args.settings = {
      mode: args.poll,
      actionTypeId: {
        category: `ACTION_CATEGORY_${category.toUpperCase()}`,
        owner: args.poll === 'custom' ? 'ACTION_OWNER_CUSTOM' : 'ACTION_OWNER_THIRD_PARTY',
        provider: values.provider || defaultProvider,
        version: values['action-version'],
      },
      maxJobs: optionalNumber('max-jobs'),
      once: values.once,
      idleTimeout: optionalNumber('idle-timeout'),
      pollInterval: number('poll-interval'),
      maxBatchSize: number('max-batch-size'),
      outputVariables: args.outputVariables,
      subscribe: values.subscribe,
      // The gateway target to poll; '' lets the gateway choose.
      pollTarget: values['poll-target'],
    };
    if (args.settings.maxJobs !== null && args.settings.maxJobs < 1) usageError('--max-jobs must be at least 1');
    if (args.settings.maxBatchSize < 1) usageError('--max-batch-size must be at least 1');
    if (args.settings.idleTimeout !== null && args.settings.idleTimeout < 0) {
      usageError('--idle-timeout must not be negative');
    }
    return args;
  }
  if (!args.jobId && !args.partnerJobId) {
    usageError('give --poll custom|partner, or --job-id and/or --partner-job-id');
  }
  if (args.partnerJobId && !args.clientToken) usageError('--partner-job-id needs --client-token');
  return args;
}

/**
 * Sends `authorization: Bearer <token>` on every call, reading the token file
 * each time: the kubelet rotates projected service-account tokens, so a token
 * read once at start-up would expire under a long-running worker.
 */
function bearerToken(path) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('authorization', `Bearer ${fs.readFileSync(path, 'utf8').trim()}`);
        next(metadata, listener);
      },
    });
}

async function main(argv) {
  const args = parseCommandLine(argv);
  const policy = { maxAttempts: args.maxAttempts, baseDelay: 0.2, maxDelay: 5 };
  const options = {};
  if (args.roundRobin) {
    options['grpc.service_config'] = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });
  }
  if (args.authority) options['grpc.default_authority'] = args.authority;
  const JobWorkerService = loadService();
  if (args.tokenFile) options.interceptors = [bearerToken(args.tokenFile)];
  let credentials = grpc.credentials.createInsecure();
  if (args.tls.caFile) {
    if (args.tls.serverName) options['grpc.ssl_target_name_override'] = args.tls.serverName;
    const read = (file) => (file ? fs.readFileSync(file) : null);
    credentials = grpc.credentials.createSsl(
      read(args.tls.caFile),
      read(args.tls.keyFile),
      read(args.tls.certFile),
    );
  }
  const client = new JobWorkerService(args.target, credentials, options);
  try {
    if (!args.poll) return await reportGivenJobs(client, args, policy);
    const worker = new Worker(client, args.settings, { deadline: args.deadline, policy });
    for (const signal of ['SIGTERM', 'SIGINT']) {
      process.on(signal, () => {
        process.stderr.write(`${signal}: stopping after the job in hand\n`);
        worker.stop();
      });
    }
    return await (args.settings.subscribe ? worker.subscribe() : worker.run());
  } finally {
    client.close();
  }
}

module.exports = { call, decodeDetails, doTheWork, report, ReportFailed, Worker };

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
