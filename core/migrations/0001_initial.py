# The live-event outbox moved here from inventory: its table stays where inventory's
# first migration created it (``inventory_liveevent``); only Django's state moves.

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('inventory', '0007_leases'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='LiveEvent',
                    fields=[
                        ('id', models.BigAutoField(primary_key=True, serialize=False)),
                        ('created_at', models.DateTimeField(auto_now_add=True, db_index=True)),
                        ('payload', models.JSONField()),
                    ],
                    options={
                        'db_table': 'inventory_liveevent',
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
