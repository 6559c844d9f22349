//! Subscriptions: jobs pushed to workers over a stream, polled for them once.
//!
//! A worker opens `SubscribeJobs` (or `SubscribeThirdPartyJobs`), names an
//! action type and its credit (how many jobs it can take), and adds credit as
//! it finishes jobs. Per replica and per *topic* (kind, action type, query
//! parameter) one poller asks CodePipeline for at most the topic's free
//! credit, through the same forwarding stack (rate limit, retries, metrics)
//! as a worker's own poll, and hands each job to one subscriber, round robin
//! among those with credit.
//!
//! When to poll: at once after a poll that came back full (it got every job
//! it asked for, so more may be waiting) and whenever credit comes back after
//! that. A poll with fewer jobs than asked (none included) drained the queue:
//! the poller waits its interval, which doubles from [`MIN_IDLE_INTERVAL`] to
//! [`MAX_IDLE_INTERVAL`], jittered, until a full poll resets it. So a backlog
//! drains as fast as credit returns, and a trickle of jobs costs one poll per
//! interval. A poller never asks for more jobs than its subscribers can take,
//! and never polls with no credit.
//!
//! A job no subscriber can take yet (its subscriber left while the poll was
//! on its way, or left with the job still in its buffer) waits on the topic,
//! up to [`HOLD_UNDELIVERED_FOR`], for the next subscriber with credit, such
//! as the same worker reconnecting. What is never done: the gateway never
//! acknowledges a job. One still untaken after that is left unacknowledged,
//! and CodePipeline hands it out again later. A job
//! CodePipeline offers again while the subscriber it went to is still
//! connected is not delivered twice: each replica remembers, for
//! [`REMEMBER_DELIVERIES_FOR`], which subscriber got which job. Replicas share
//! nothing, so two replicas can deliver one job once each; only one worker's
//! acknowledgement can win, and the other worker drops the job.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use aws_sdk_codepipeline::types::ActionTypeId;
use tokio::{
    sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    time::Instant,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    access::{Access, Refusal, ShowActionType},
    auth::Caller,
    call::{Call, CallError, ErrorKind},
    client_tokens::ClientTokens,
    connections::{ConnectionGoingAway, HeadersArrived},
    error::{call_error_status, invalid_request_status, refusal_status, slow_request_status},
    metrics::Metrics,
    operation::{Operation, Verb},
    operations as op,
    proto::v1,
    targets::{Target, Targets},
    validation::{Checker, InvalidRequest},
};

/// The most credit a subscription may hold at once, and so the most jobs it
/// can have on their way to it: what bounds its buffer.
pub const MAX_CREDIT: u32 = 100;

/// The first wait after a poll drained the queue; it doubles up to the next.
const MIN_IDLE_INTERVAL: Duration = Duration::from_millis(250);

/// The longest wait between polls while the queue is drained: the bound on
/// pickup latency (half of it, on average), and one poll per 1.5 s per
/// replica and action type, however many workers subscribe.
pub const MAX_IDLE_INTERVAL: Duration = Duration::from_millis(1500);

/// After a failed poll the poller waits this long, doubling up to the next.
const MIN_ERROR_INTERVAL: Duration = Duration::from_secs(1);
const MAX_ERROR_INTERVAL: Duration = Duration::from_secs(10);

/// How long a replica remembers which subscriber it delivered a job to.
pub const REMEMBER_DELIVERIES_FOR: Duration = Duration::from_secs(600);

/// How long polled jobs that no subscriber could take (they left while the
/// poll was on its way, or a job came back from one that left) wait on the
/// replica for one with credit: a worker's reconnect, and short against
/// CodePipeline's own timeout. After that the job is left to CodePipeline,
/// which offers it again.
pub const HOLD_UNDELIVERED_FOR: Duration = Duration::from_secs(5);

/// At most this many deliveries are remembered (about 10 MB); the oldest go first.
const REMEMBER_AT_MOST: usize = 100_000;

/// What the two subscription RPCs differ in: the poll they make and the job
/// messages they carry.
pub trait Feed: Send + Sync + 'static {
    /// The `kind` label of its metrics.
    const KIND: &'static str;
    /// The gRPC method's name.
    const METHOD: &'static str;
    /// The action owner its polls serve.
    const OWNER: v1::ActionOwner;
    /// The poll that fetches its jobs.
    type Poll: Operation<Valid = op::Poll, Output = Vec<Self::Job>>;
    type Job: Send + 'static;
    type Request: prost::Message + Default + Send + 'static;
    type Response: Send + 'static;

    fn parts(request: Self::Request) -> Parts;
    /// Tells a job which target it came from.
    fn set_target(job: &mut Self::Job, target: &'static str);
    fn job_id(job: &Self::Job) -> &str;
    /// The partner client a job belongs to (partner jobs only).
    fn client_id(job: &Self::Job) -> Option<&str>;
    fn response(job: Self::Job) -> Self::Response;
}

/// What one subscription message says, whatever its RPC.
pub struct Parts {
    pub action_type_id: Option<v1::ActionTypeId>,
    pub query_param: HashMap<String, String>,
    pub credit: i32,
    pub target: String,
}

/// `SubscribeJobs`: custom jobs.
pub struct CustomJobs;

impl Feed for CustomJobs {
    const KIND: &'static str = "custom";
    const METHOD: &'static str = "SubscribeJobs";
    const OWNER: v1::ActionOwner = v1::ActionOwner::Custom;
    type Poll = op::PollForJobs;
    type Job = v1::Job;
    type Request = v1::SubscribeJobsRequest;
    type Response = v1::SubscribeJobsResponse;

    fn parts(r: Self::Request) -> Parts {
        Parts {
            action_type_id: r.action_type_id,
            query_param: r.query_param,
            credit: r.credit,
            target: r.target,
        }
    }

    fn set_target(job: &mut v1::Job, target: &'static str) {
        job.target = target.to_owned();
    }

    fn job_id(job: &v1::Job) -> &str {
        &job.id
    }

    fn client_id(_: &v1::Job) -> Option<&str> {
        None
    }

    fn response(job: v1::Job) -> Self::Response {
        v1::SubscribeJobsResponse { job: Some(job) }
    }
}

/// `SubscribeThirdPartyJobs`: partner jobs.
pub struct PartnerJobs;

impl Feed for PartnerJobs {
    const KIND: &'static str = "partner";
    const METHOD: &'static str = "SubscribeThirdPartyJobs";
    const OWNER: v1::ActionOwner = v1::ActionOwner::ThirdParty;
    type Poll = op::PollForThirdPartyJobs;
    type Job = v1::ThirdPartyJob;
    type Request = v1::SubscribeThirdPartyJobsRequest;
    type Response = v1::SubscribeThirdPartyJobsResponse;

    fn parts(r: Self::Request) -> Parts {
        Parts {
            action_type_id: r.action_type_id,
            query_param: HashMap::new(),
            credit: r.credit,
            target: r.target,
        }
    }

    fn set_target(job: &mut v1::ThirdPartyJob, target: &'static str) {
        job.target = target.to_owned();
    }

    fn job_id(job: &v1::ThirdPartyJob) -> &str {
        &job.job_id
    }

    fn client_id(job: &v1::ThirdPartyJob) -> Option<&str> {
        Some(&job.client_id)
    }

    fn response(job: v1::ThirdPartyJob) -> Self::Response {
        v1::SubscribeThirdPartyJobsResponse { job: Some(job) }
    }
}

/// What every subscription of the process shares.
pub struct FeedContext {
    pub targets: Arc<Targets>,
    pub metrics: Arc<Metrics>,
    pub access: Arc<Access>,
    pub client_tokens: Option<Arc<ClientTokens>>,
    /// Each poll's deadline.
    pub poll_deadline: Duration,
    /// How long after its headers a subscription's first message may come.
    pub first_message_timeout: Duration,
    /// One permit per open subscription, both kinds together.
    pub slots: Arc<Semaphore>,
}

/// Both kinds of subscription.
pub struct Subscriptions {
    pub custom: Hub<CustomJobs>,
    pub partner: Hub<PartnerJobs>,
}

impl Subscriptions {
    pub fn new(context: FeedContext) -> Self {
        let context = Arc::new(context);
        Subscriptions {
            custom: Hub::new(context.clone()),
            partner: Hub::new(context),
        }
    }
}

/// The subscriptions of one kind, by topic.
pub struct Hub<F: Feed> {
    inner: Arc<HubInner<F>>,
}

struct HubInner<F: Feed> {
    context: Arc<FeedContext>,
    topics: Mutex<HashMap<TopicKey, Arc<Topic<F>>>>,
    delivered: Mutex<Delivered>,
    next_id: AtomicU64,
}

/// The action type as shown in logs, the sorted query parameter, and the
/// target polled.
type TopicKey = (String, Vec<(String, String)>, &'static str);

/// What a subscription's first message asks for.
#[derive(Debug)]
struct Subscription {
    /// The `target` field, resolved once the rest is valid.
    requested_target: String,
    action_type_id: ActionTypeId,
    query_param: Option<HashMap<String, String>>,
    credit: u32,
}

impl<F: Feed> Hub<F> {
    fn new(context: Arc<FeedContext>) -> Self {
        Hub {
            inner: Arc::new(HubInner {
                context,
                topics: Mutex::new(HashMap::new()),
                delivered: Mutex::new(Delivered::default()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// One subscription, or the status that refused it (logged).
    pub async fn subscribe(
        &self,
        request: Request<Streaming<F::Request>>,
    ) -> Result<Response<JobStream<F>>, Status> {
        let opened = self.open(request).await;
        if let Err(status) = &opened {
            tracing::info!(
                method = F::METHOD,
                code = crate::metrics::code_name(status.code()),
                "subscription refused: {}",
                status.message()
            );
        }
        opened
    }

    /// Authenticates, validates and authorizes the first message (a
    /// subscriber must be allowed to poll the action type), then joins the
    /// subscriber to its topic. Refusals answer before the stream starts.
    async fn open(
        &self,
        request: Request<Streaming<F::Request>>,
    ) -> Result<Response<JobStream<F>>, Status> {
        let context = &self.inner.context;
        let method = F::METHOD;
        let refused = |refusal: Refusal, identity: &str| {
            context.metrics.record_refusal(method, refusal.label());
            refusal_status(&refusal, method, identity)
        };
        let arrived = request
            .extensions()
            .get::<HeadersArrived>()
            .map_or_else(Instant::now, |headers| headers.0);
        let going_away = request.extensions().get::<ConnectionGoingAway>().cloned();
        let caller = context
            .access
            .caller_of(&request)
            .await
            .map_err(|refusal| refused(refusal, ""))?;
        let mut inbound = request.into_inner();
        let wait = context.first_message_timeout;
        let first = match tokio::time::timeout_at(arrived + wait, inbound.message()).await {
            Err(_) => return Err(slow_request_status(wait)),
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(invalid_request_status(&InvalidRequest::one(
                    "actionTypeId",
                    "is required: the stream ended before its first message",
                )));
            }
            Ok(Ok(Some(first))) => first,
        };
        let subscription = subscription::<F>(F::parts(first))
            .map_err(|invalid| invalid_request_status(&invalid))?;
        let (target, _) = context
            .targets
            .for_poll(&subscription.requested_target, &subscription.action_type_id)
            .map_err(|invalid| invalid_request_status(&invalid))?;
        let target = target.clone();
        if context.access.has_policy() {
            context
                .access
                .authorize(
                    &caller,
                    Verb::Poll,
                    &subscription.action_type_id,
                    target.name,
                )
                .map_err(|refusal| refused(refusal, &caller.identity))?;
        }
        let Ok(slot) = context.slots.clone().try_acquire_owned() else {
            let mut error = CallError::new(
                ErrorKind::Overloaded,
                "the gateway has as many subscriptions as it takes (--max-subscriptions); \
                 subscribe to another replica, or poll",
            );
            error.retry_after = Some(Duration::from_secs(1));
            return Err(call_error_status(&error, error.retry_after));
        };
        let action_type = ShowActionType(&subscription.action_type_id).to_string();
        tracing::info!(
            method,
            caller = caller.identity.as_str(),
            action_type,
            aws_target = target.name,
            credit = subscription.credit,
            "subscribed"
        );
        // Room for every job its credit allows, and the status that ends it.
        let (out, jobs) = mpsc::channel(MAX_CREDIT as usize + 1);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let credit = subscription.credit;
        let topic = self.inner.join(
            subscription,
            target,
            Subscriber {
                id,
                credit,
                caller: caller.clone(),
                out,
            },
        );
        let (ended, ended_signal) = oneshot::channel();
        tokio::spawn(read_credit::<F>(
            inbound,
            topic.clone(),
            id,
            ended_signal,
            going_away,
        ));
        Ok(Response::new(JobStream {
            jobs,
            registration: Registration {
                hub: self.inner.clone(),
                topic,
                id,
                caller: caller.identity,
                action_type,
                metrics: context.metrics.clone(),
                _slot: slot,
                _open: context.metrics.subscription_opened(F::KIND),
                _ended: ended,
            },
        }))
    }
}

/// The first message: what to subscribe to, and the first credit.
fn subscription<F: Feed>(parts: Parts) -> Result<Subscription, InvalidRequest> {
    let mut check = Checker::default();
    let action_type_id = check.action_type_id(parts.action_type_id, F::OWNER, F::METHOD);
    let query_param = check.query_param(parts.query_param);
    let credit = credit(&mut check, parts.credit);
    check.finish(|| {
        Some(Subscription {
            requested_target: parts.target,
            action_type_id: action_type_id?,
            query_param,
            credit: credit?,
        })
    })
}

/// A later message: credit, and nothing else.
fn more_credit(parts: Parts) -> Result<u32, InvalidRequest> {
    let mut check = Checker::default();
    if parts.action_type_id.is_some() {
        check.violation(
            "actionTypeId",
            "may only be set in the subscription's first message",
        );
    }
    if !parts.query_param.is_empty() {
        check.violation(
            "queryParam",
            "may only be set in the subscription's first message",
        );
    }
    if !parts.target.is_empty() {
        check.violation(
            "target",
            "may only be set in the subscription's first message",
        );
    }
    let credit = credit(&mut check, parts.credit);
    check.finish(|| credit)
}

fn credit(check: &mut Checker, credit: i32) -> Option<u32> {
    match u32::try_from(credit) {
        Ok(credit @ 1..=MAX_CREDIT) => Some(credit),
        _ => {
            check.violation(
                "credit",
                format!("must be 1 to {MAX_CREDIT} (jobs the worker can take), but is {credit}"),
            );
            None
        }
    }
}

impl<F: Feed> HubInner<F> {
    fn topics(&self) -> MutexGuard<'_, HashMap<TopicKey, Arc<Topic<F>>>> {
        self.topics.lock().expect("topics lock poisoned")
    }

    /// Adds a subscriber to its topic, starting the topic's poller if none runs.
    fn join(
        self: &Arc<Self>,
        subscription: Subscription,
        target: Arc<Target>,
        subscriber: Subscriber<F>,
    ) -> Arc<Topic<F>> {
        let mut query: Vec<(String, String)> = subscription
            .query_param
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        query.sort();
        let key = (
            ShowActionType(&subscription.action_type_id).to_string(),
            query,
            target.name,
        );
        let mut topics = self.topics();
        let topic = topics
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Topic {
                    key,
                    target,
                    action_type_id: subscription.action_type_id,
                    query_param: subscription.query_param,
                    state: Mutex::new(TopicState::default()),
                    credit_arrived: Notify::new(),
                })
            })
            .clone();
        let mut state = topic.state();
        state.subscribers.push_back(subscriber);
        if !state.polling {
            state.polling = true;
            tokio::spawn(poll_for_subscribers(self.clone(), topic.clone()));
        }
        drop(state);
        drop(topics);
        topic.credit_arrived.notify_one();
        topic
    }

    /// A subscriber leaves, giving back the jobs it never received: first in
    /// line, since they are the oldest. If its topic retired meanwhile (the
    /// subscription had already been ended), they go to the topic's
    /// successor, which is started for them if need be.
    fn leave_returning(self: &Arc<Self>, topic: &Arc<Topic<F>>, id: u64, jobs: Vec<F::Job>) {
        let mut topics = self.topics();
        topic.state().subscribers.retain(|s| s.id != id);
        if !jobs.is_empty() {
            let live = topics
                .entry(topic.key.clone())
                .or_insert_with(|| topic.clone())
                .clone();
            let mut state = live.state();
            let now = Instant::now();
            for job in jobs.into_iter().rev() {
                state.waiting.push_front((job, now));
            }
            // No runtime: the process is ending, and the jobs with it.
            if !state.polling
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                state.polling = true;
                runtime.spawn(poll_for_subscribers(self.clone(), live.clone()));
            }
            drop(state);
            live.credit_arrived.notify_one();
        }
        drop(topics);
        topic.credit_arrived.notify_one();
    }

    /// The topic's free credit; `None` once it has no subscriber and no job
    /// waiting, and then it is gone from the hub and its poller ends.
    fn free_credit_or_retire(&self, topic: &Arc<Topic<F>>) -> Option<u32> {
        let mut topics = self.topics();
        let mut state = topic.state();
        if state.subscribers.is_empty() && state.waiting.is_empty() {
            state.polling = false;
            topics.remove(&topic.key);
            return None;
        }
        Some(state.subscribers.iter().map(|s| s.credit).sum())
    }

    /// Queues polled jobs (none when woken by credit) behind those already
    /// waiting, then hands the waiting jobs, oldest first, each to one
    /// subscriber with credit, round robin. A job offered again while the
    /// subscriber it went to is connected is dropped; one that waited
    /// [`HOLD_UNDELIVERED_FOR`] is left to CodePipeline. Returns when the
    /// oldest job still waiting is due to be given up.
    fn deliver(&self, topic: &Topic<F>, polled: Vec<F::Job>) -> Option<Instant> {
        let context = &self.context;
        let now = Instant::now();
        let allowed = |caller: &Caller| {
            !context.access.has_policy()
                || context
                    .access
                    .authorize(caller, Verb::Poll, &topic.action_type_id, topic.target.name)
                    .is_ok()
        };
        let (mut delivered, mut held, mut given_up) = (0, 0, 0);
        let mut state = topic.state();
        let mut memory = self.delivered.lock().expect("deliveries lock poisoned");
        for job in polled {
            if let Some(holder) = memory.holder(F::job_id(&job), now)
                && state.has(holder)
            {
                held += 1;
            } else {
                state.waiting.push_back((job, now));
            }
        }
        while state
            .waiting
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= HOLD_UNDELIVERED_FOR)
        {
            state.waiting.pop_front();
            given_up += 1;
        }
        while let Some((job, since)) = state.waiting.pop_front() {
            let job_id = F::job_id(&job).to_owned();
            match state.hand_out(job, &allowed, F::METHOD, &topic.key.0) {
                Ok(subscriber) => {
                    memory.remember(job_id, subscriber, now);
                    delivered += 1;
                }
                Err(job) => {
                    state.waiting.push_front((job, since));
                    break;
                }
            }
        }
        let due = state
            .waiting
            .front()
            .map(|(_, since)| *since + HOLD_UNDELIVERED_FOR);
        drop(memory);
        drop(state);
        let metrics = &context.metrics;
        metrics.record_feed_jobs(F::KIND, "delivered", delivered);
        metrics.record_feed_jobs(F::KIND, "held_by_subscriber", held);
        metrics.record_feed_jobs(F::KIND, "no_subscriber", given_up);
        if given_up > 0 {
            tracing::info!(
                method = F::METHOD,
                action_type = topic.key.0.as_str(),
                aws_target = topic.target.name,
                jobs = given_up,
                "polled jobs not delivered: no subscriber had credit for them within 5s. They were \
                 not acknowledged, so CodePipeline will hand them out again"
            );
        }
        due
    }
}

/// The subscribers of one action type (and query parameter) on this replica.
struct Topic<F: Feed> {
    key: TopicKey,
    target: Arc<Target>,
    action_type_id: ActionTypeId,
    query_param: Option<HashMap<String, String>>,
    state: Mutex<TopicState<F>>,
    /// Woken when credit comes back or a subscriber leaves.
    credit_arrived: Notify,
}

struct TopicState<F: Feed> {
    /// In round-robin order: the next job goes to the first with credit,
    /// which then moves to the back.
    subscribers: VecDeque<Subscriber<F>>,
    /// Polled jobs no subscriber could take yet, oldest first, with when
    /// they started waiting.
    waiting: VecDeque<(F::Job, Instant)>,
    /// Whether the topic's poller runs.
    polling: bool,
}

impl<F: Feed> Default for TopicState<F> {
    fn default() -> Self {
        TopicState {
            subscribers: VecDeque::new(),
            waiting: VecDeque::new(),
            polling: false,
        }
    }
}

struct Subscriber<F: Feed> {
    id: u64,
    /// Jobs it can still take.
    credit: u32,
    caller: Caller,
    out: mpsc::Sender<Result<F::Job, Status>>,
}

impl<F: Feed> Topic<F> {
    fn state(&self) -> MutexGuard<'_, TopicState<F>> {
        self.state.lock().expect("topic lock poisoned")
    }

    fn add_credit(&self, id: u64, credit: u32) -> Result<(), InvalidRequest> {
        let mut state = self.state();
        let Some(subscriber) = state.subscribers.iter_mut().find(|s| s.id == id) else {
            return Ok(());
        };
        let total = subscriber.credit + credit;
        if total > MAX_CREDIT {
            return Err(InvalidRequest::one(
                "credit",
                format!(
                    "would raise the subscription's credit to {total}: at most {MAX_CREDIT} jobs \
                     may be outstanding (add credit as jobs finish, not ahead)"
                ),
            ));
        }
        subscriber.credit = total;
        drop(state);
        self.credit_arrived.notify_one();
        Ok(())
    }

    /// Ends one subscription with `status`.
    fn end(&self, id: u64, status: Status) {
        if let Some(subscriber) = self.leave(id) {
            // The channel keeps room for this one.
            let _ = subscriber.out.try_send(Err(status));
        }
    }

    /// Ends every subscription of the topic with `status`.
    fn end_all(&self, status: &Status) {
        let subscribers = std::mem::take(&mut self.state().subscribers);
        for subscriber in subscribers {
            let _ = subscriber.out.try_send(Err(status.clone()));
        }
        self.credit_arrived.notify_one();
    }

    fn leave(&self, id: u64) -> Option<Subscriber<F>> {
        let mut state = self.state();
        let index = state.subscribers.iter().position(|s| s.id == id)?;
        let subscriber = state.subscribers.remove(index);
        drop(state);
        self.credit_arrived.notify_one();
        subscriber
    }
}

impl<F: Feed> TopicState<F> {
    fn has(&self, id: u64) -> bool {
        self.subscribers.iter().any(|s| s.id == id)
    }

    /// Gives `job` to the next subscriber with credit and returns its id, or
    /// gives the job back when no subscriber can take it. A subscriber the
    /// policy no longer allows to poll the type is ended on the way.
    fn hand_out(
        &mut self,
        mut job: F::Job,
        allowed: &impl Fn(&Caller) -> bool,
        method: &'static str,
        action_type: &str,
    ) -> Result<u64, F::Job> {
        for _ in 0..self.subscribers.len() {
            let Some(mut subscriber) = self.subscribers.pop_front() else {
                break;
            };
            if subscriber.credit == 0 {
                self.subscribers.push_back(subscriber);
                continue;
            }
            if !allowed(&subscriber.caller) {
                let refusal = Refusal::NotAuthorized {
                    action_type: action_type.to_owned(),
                };
                let status = refusal_status(&refusal, method, &subscriber.caller.identity);
                let _ = subscriber.out.try_send(Err(status));
                continue;
            }
            match subscriber.out.try_send(Ok(job)) {
                Ok(()) => {
                    subscriber.credit -= 1;
                    let id = subscriber.id;
                    self.subscribers.push_back(subscriber);
                    return Ok(id);
                }
                // Gone: its stream was dropped and is leaving the topic.
                Err(mpsc::error::TrySendError::Closed(back)) => {
                    job = back.expect("a job was sent");
                }
                // Cannot happen while credit bounds the buffer.
                Err(mpsc::error::TrySendError::Full(back)) => {
                    job = back.expect("a job was sent");
                    self.subscribers.push_back(subscriber);
                }
            }
        }
        Err(job)
    }
}

/// Which subscriber each recently delivered job went to.
#[derive(Default)]
struct Delivered {
    holders: HashMap<String, (u64, Instant)>,
    /// Oldest first, to forget in order.
    order: VecDeque<(String, Instant)>,
}

impl Delivered {
    fn holder(&mut self, job_id: &str, now: Instant) -> Option<u64> {
        self.forget_before(now - REMEMBER_DELIVERIES_FOR);
        self.holders.get(job_id).map(|(subscriber, _)| *subscriber)
    }

    fn remember(&mut self, job_id: String, subscriber: u64, now: Instant) {
        if self.order.len() >= REMEMBER_AT_MOST
            && let Some((oldest, at)) = self.order.pop_front()
        {
            self.forget(&oldest, at);
        }
        self.holders.insert(job_id.clone(), (subscriber, now));
        self.order.push_back((job_id, now));
    }

    fn forget_before(&mut self, cutoff: Instant) {
        while let Some((_, at)) = self.order.front()
            && *at < cutoff
        {
            let (job_id, at) = self.order.pop_front().expect("a front entry");
            self.forget(&job_id, at);
        }
    }

    /// Forgets a job only if this entry is its latest delivery.
    fn forget(&mut self, job_id: &str, at: Instant) {
        if self
            .holders
            .get(job_id)
            .is_some_and(|(_, latest)| *latest == at)
        {
            self.holders.remove(job_id);
        }
    }
}

/// Reads a subscription's later messages (credit) until it ends, and ends it
/// when its connection goes away, so that the worker reconnects elsewhere.
async fn read_credit<F: Feed>(
    mut inbound: Streaming<F::Request>,
    topic: Arc<Topic<F>>,
    id: u64,
    mut ended: oneshot::Receiver<()>,
    going_away: Option<ConnectionGoingAway>,
) {
    let going_away = async {
        match going_away {
            // A dropped sender means the connection is gone: end too.
            Some(ConnectionGoingAway(mut signal)) => {
                let _ = signal.wait_for(|going| *going).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(going_away);
    let mut reading = true;
    loop {
        tokio::select! {
            _ = &mut ended => return,
            () = &mut going_away => {
                topic.end(id, going_away_status(F::METHOD));
                return;
            }
            message = inbound.message(), if reading => match message {
                Ok(Some(message)) => {
                    let added = more_credit(F::parts(message))
                        .and_then(|credit| topic.add_credit(id, credit));
                    if let Err(invalid) = added {
                        topic.end(id, invalid_request_status(&invalid));
                        return;
                    }
                }
                // Half-closed: no more credit will come, but the jobs its
                // credit allows still do.
                Ok(None) => reading = false,
                // Reset or broken: the subscriber is gone.
                Err(_) => {
                    topic.leave(id);
                    return;
                }
            },
        }
    }
}

/// The subscription's connection is closing: subscribe again.
fn going_away_status(method: &str) -> Status {
    let mut error = CallError::new(
        ErrorKind::ShuttingDown,
        format!(
            "{method}: this connection is closing (gateway shutdown, maximum connection age or \
             idle timeout); subscribe again"
        ),
    );
    error.retry_after = Some(Duration::ZERO);
    call_error_status(&error, error.retry_after)
}

/// Errors that polling again cannot cure: the subscriptions end with them.
fn is_permanent(error: &CallError) -> bool {
    matches!(
        error.kind,
        ErrorKind::ActionTypeNotFound | ErrorKind::Validation
    )
}

/// A uniformly jittered wait around `interval` (±25 %), so that replicas and
/// topics do not poll in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.75..1.25))
}

/// The poller of one topic: runs while the topic has subscribers.
async fn poll_for_subscribers<F: Feed>(hub: Arc<HubInner<F>>, topic: Arc<Topic<F>>) {
    let context = hub.context.clone();
    let mut idle_interval = MIN_IDLE_INTERVAL;
    let mut error_interval = MIN_ERROR_INTERVAL;
    let mut next_poll = Instant::now();
    let far = Instant::now() + Duration::from_secs(86_400 * 365);
    loop {
        let credit_arrived = topic.credit_arrived.notified();
        // Jobs already here go first, to whoever has credit now.
        let give_up_at = hub.deliver(&topic, Vec::new()).unwrap_or(far);
        let free = match hub.free_credit_or_retire(&topic) {
            None => return,
            Some(0) => {
                tokio::select! {
                    () = credit_arrived => {}
                    () = tokio::time::sleep_until(give_up_at) => {}
                }
                continue;
            }
            Some(free) => free,
        };
        if Instant::now() < next_poll {
            // Credit that comes back meanwhile takes waiting jobs at once;
            // the next poll still waits its turn.
            tokio::select! {
                () = credit_arrived => {}
                () = tokio::time::sleep_until(next_poll) => {}
            }
            continue;
        }
        let ask = free.min(MAX_CREDIT);
        let poll = op::Poll {
            action_type_id: topic.action_type_id.clone(),
            max_batch_size: Some(ask as i32),
            query_param: topic.query_param.clone(),
        };
        let call = Call::<F::Poll>::new(poll, Instant::now() + context.poll_deadline);
        match topic.target.stack.forward(call).await {
            Ok(success) => {
                error_interval = MIN_ERROR_INTERVAL;
                let mut jobs = success.output;
                let target = topic.target.name;
                let got = jobs.len() as u32;
                context
                    .metrics
                    .record_feed_poll(F::KIND, if got == 0 { "empty" } else { "jobs" });
                let several = context.targets.several();
                for job in &mut jobs {
                    if several {
                        F::set_target(job, target);
                    }
                    context.targets.remember(F::job_id(job), target);
                    context
                        .access
                        .remember_job_type(F::job_id(job), &topic.action_type_id);
                    if let (Some(map), Some(client_id)) =
                        (&context.client_tokens, F::client_id(job))
                    {
                        map.remember(F::job_id(job), client_id);
                    }
                }
                hub.deliver(&topic, jobs);
                let now = Instant::now();
                if got >= ask {
                    // Full: more may be waiting.
                    idle_interval = MIN_IDLE_INTERVAL;
                    next_poll = now;
                } else {
                    // Drained: polling sooner would only find fewer jobs
                    // per poll, so the interval grows to its bound.
                    next_poll = now + jittered(idle_interval);
                    idle_interval = (idle_interval * 2).min(MAX_IDLE_INTERVAL);
                }
            }
            Err(error) => {
                context.metrics.record_feed_poll(F::KIND, "error");
                let status = call_error_status(&error, None);
                if is_permanent(&error) {
                    tracing::warn!(
                        method = F::METHOD,
                        action_type = topic.key.0.as_str(),
                        aws_target = topic.target.name,
                        cause = %error,
                        "a subscription's poll was refused: its subscriptions end with the error"
                    );
                    topic.end_all(&status);
                    continue;
                }
                tracing::warn!(
                    method = F::METHOD,
                    action_type = topic.key.0.as_str(),
                    aws_target = topic.target.name,
                    code = crate::metrics::code_name(status.code()),
                    cause = %error,
                    retry_in_ms = error_interval.as_millis() as u64,
                    "a subscription's poll failed; polling again later"
                );
                next_poll = Instant::now() + jittered(error_interval);
                error_interval = (error_interval * 2).min(MAX_ERROR_INTERVAL);
            }
        }
    }
}

/// A subscription's jobs, as its gRPC response stream. Dropped when the
/// worker goes away: it leaves its topic then.
pub struct JobStream<F: Feed> {
    jobs: mpsc::Receiver<Result<F::Job, Status>>,
    registration: Registration<F>,
}

struct Registration<F: Feed> {
    hub: Arc<HubInner<F>>,
    topic: Arc<Topic<F>>,
    id: u64,
    caller: String,
    action_type: String,
    metrics: Arc<Metrics>,
    _slot: OwnedSemaphorePermit,
    _open: crate::metrics::OpenSubscription,
    /// Dropped with the stream: stops its credit reader.
    _ended: oneshot::Sender<()>,
}

impl<F: Feed> Stream for JobStream<F> {
    type Item = Result<F::Response, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.jobs
            .poll_recv(cx)
            .map(|item| item.map(|job| job.map(F::response)))
    }
}

impl<F: Feed> Drop for JobStream<F> {
    fn drop(&mut self) {
        let registration = &self.registration;
        // Jobs still in the buffer never left: they go back to the topic,
        // for the next subscriber with credit.
        self.jobs.close();
        let mut returned = Vec::new();
        while let Ok(item) = self.jobs.try_recv() {
            if let Ok(job) = item {
                returned.push(job);
            }
        }
        if !returned.is_empty() {
            registration
                .metrics
                .record_feed_jobs(F::KIND, "returned", returned.len() as u64);
        }
        registration
            .hub
            .leave_returning(&registration.topic, registration.id, returned);
        tracing::info!(
            method = F::METHOD,
            caller = registration.caller.as_str(),
            action_type = registration.action_type.as_str(),
            "subscription ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(credit: i32) -> Parts {
        Parts {
            target: String::new(),
            action_type_id: None,
            query_param: HashMap::new(),
            credit,
        }
    }

    #[test]
    fn credit_is_one_to_the_maximum() {
        assert_eq!(more_credit(parts(1)).unwrap(), 1);
        assert_eq!(more_credit(parts(100)).unwrap(), 100);
        for bad in [0, -1, 101, i32::MAX] {
            let invalid = more_credit(parts(bad)).unwrap_err();
            assert_eq!(invalid.violations[0].field, "credit", "{bad}");
        }
    }

    #[test]
    fn later_messages_carry_only_credit() {
        let mut message = parts(1);
        message.action_type_id = Some(v1::ActionTypeId::default());
        message.query_param.insert("k".into(), "v".into());
        let fields: Vec<String> = more_credit(message)
            .unwrap_err()
            .violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["actionTypeId", "queryParam"]);
    }

    #[test]
    fn the_first_message_needs_an_action_type_of_its_owner_and_credit() {
        let invalid = subscription::<PartnerJobs>(parts(0)).unwrap_err();
        let fields: Vec<&str> = invalid
            .violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["actionTypeId", "credit"]);
        let mut custom = parts(3);
        custom.action_type_id = Some(v1::ActionTypeId {
            category: v1::ActionCategory::Build.into(),
            owner: v1::ActionOwner::Custom.into(),
            provider: "P".into(),
            version: "1".into(),
        });
        assert!(subscription::<CustomJobs>(custom).is_ok());
    }

    #[test]
    fn deliveries_are_forgotten_after_their_time_and_oldest_first() {
        let start = Instant::now();
        let mut memory = Delivered::default();
        memory.remember("a".into(), 1, start);
        memory.remember("b".into(), 2, start + Duration::from_secs(1));
        assert_eq!(memory.holder("a", start), Some(1));
        let later = start + REMEMBER_DELIVERIES_FOR + Duration::from_millis(500);
        assert_eq!(memory.holder("a", later), None);
        assert_eq!(memory.holder("b", later), Some(2));
        // A job delivered again is remembered from its latest delivery.
        memory.remember("b".into(), 3, later);
        let much_later = later + Duration::from_secs(2);
        assert_eq!(memory.holder("b", much_later), Some(3));
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let wait = jittered(Duration::from_secs(1));
            assert!(wait >= Duration::from_millis(750) && wait < Duration::from_millis(1250));
        }
    }
}
