"""Fulfillment routing: the ``[fulfillment]`` rules and the pure routing function.

Routing decides which node (warehouse, store, drop-ship supplier) fulfils each line of an
order, with which carrier, by when, and records why.  The rules have the shape the
established order-management systems use (Shopify's ordered ranking rules, Fluent
Commerce's sourcing strategies, HotWax's routings):

1. **Ordered rules.**  The first enabled rule whose ``match`` holds for the order is
   tried.  ``match`` is a label-matcher expression (the grammar of
   :mod:`rules.matchers`) over the order's labels ``region`` (destination region as
   given), ``market`` (the destination's market, from the region table), ``channel``,
   ``method`` and its lines' ``category``, ``product_type``, ``sku`` and ``hazmat``
   (``true``/``false``), plus optional order value and weight ranges.  A line label
   matches like a set: ``category=furniture`` holds when *any* line is furniture,
   ``category!=furniture`` when *no* line is.
2. **Eligibility filters**, per node: its kind (``kinds``; BOPIS and ship-from-store
   only ever use stores), not disabled in ``[fulfillment.nodes]``, within
   ``max_distance_km`` of the destination (for BOPIS: of the pickup store the customer
   chose, else of the destination; the service distance defaults to
   ``bopis_service_km``), remaining daily capacity, a valid fulfillment window
   (``window``: ``promise`` = ships / is ready by the order's promised-by, or today when
   it has none; ``today`` = ships / is ready on the node's local day; ``any``), and stock
   after the safety buffer (on hand − reserved − max(node's own buffer, the buffer for
   its kind)).  Ship-by and pickup times come from :mod:`rules.geo` (the node's opening
   hours and cut-off in its own zone, plus the preparation time: per node, else per
   rule, else per kind).
3. **Ranking criteria** (``rank_by``), applied in order as tie-breakers: ``fewest_splits``
   (a node that fills more of the remaining lines first), ``same_market`` (node's market
   equals the destination's), ``distance``, ``manual_rank`` (``[fulfillment.nodes]``,
   lower first), ``remaining_capacity`` (more first), ``soonest`` (earliest ship-by /
   ready time); the node id breaks any remaining tie.
4. **Split policy**: lines are allocated greedily to the best-ranked node that can fill
   them whole (a line is never split), using at most ``max_splits`` + 1 nodes (BOPIS: one).
5. **Fallback** when no plan is found: ``next_rule`` (try the next matching rule),
   ``next_pickup_window`` (the same rule without the time window: the order goes to the
   best node at its next pickup window or dispatch; then the next rule), or ``hold``
   (stop: a person decides).  A BOPIS order no rule can place is offered ship-to-home
   (routed again as a ``ship`` order) when ``bopis_ship_to_home`` is on.  An order is
   ``unfulfillable`` when some line cannot be filled whole by any node after buffers
   (whatever the rules), ``held`` when stock exists but the rules place it nowhere.
6. **Carrier**: the first ``[[fulfillment.carriers]]`` entry whose ``match`` holds for a
   shipment (order labels plus ``node``, ``node_kind``, ``node_region``, and the
   shipment's line labels), never an ``air`` carrier for a shipment holding hazmat unless
   ``allow_air_for_hazmat``; else ``default_carrier``.  Pickups have no carrier.

With no rules at all, the built-in :data:`DEFAULT_RULES` apply.  The module is pure: no
I/O, no clock; ``now`` is an argument (the time the order was placed, when replaying).

The subpackage's modules: :mod:`rules.routing.config` (the ``[fulfillment]`` models),
:mod:`rules.routing.orders` (inputs and decisions), :mod:`rules.routing.candidates`
(eligibility and ranking of a node), :mod:`rules.routing.router` (:func:`route`, the
algorithm), :mod:`rules.routing.document` (writing the section back into the file).
"""
