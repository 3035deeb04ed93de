def report(world, wait):
    return 0
