"""Notifications: subscriptions to deployer.events, delivered by Celery with retries and a log.

A subscription (global, or for one app) names the events it wants, a channel (Slack or
Teams incoming webhook, email, a signed generic webhook) and a target. When an event is
emitted, :mod:`dashboard.notifications.listener` records one :class:`Delivery` per
matching subscription and sends its task after commit; :mod:`.delivery` makes each
attempt, records it, and says whether to try again. A target that fails never touches
the deploy or the run that emitted the event.
"""
