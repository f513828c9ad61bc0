from ecsdemo.cli import main

main()
