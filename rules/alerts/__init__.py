"""Alerts: rules over the panel snapshots, their state machine, silences and actions.

* :mod:`rules.alerts.samples`: every metric value of one refresh, read from the snapshots;
* :mod:`rules.alerts.rule`: the ``[[alert]]`` rule model (metric names: :mod:`store.registry`);
* :mod:`rules.alerts.state`: the state machine (:func:`~rules.alerts.state.step`);
* :mod:`rules.alerts.silences`: silences and inhibition (what mutes an alert);
* :mod:`rules.alerts.preview`: what a rule would do now, before it is saved;
* :mod:`rules.alerts.actions`: acknowledge / silence / list, and the jump to a panel row.

The engine that runs them on every refresh is :mod:`rules.engine`; roles are
:mod:`rules.roles`.
"""
