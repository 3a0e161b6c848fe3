"""Operations and facts pyinfra does not ship (UFW), written in pyinfra's own style."""
