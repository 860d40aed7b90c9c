"""Security groups on br-int: a pure flow compiler (``compiler``), its OpenFlow encoding (``encode``) and the
driver that keeps br-int's flows equal to what the compiler says (``driver``)."""
