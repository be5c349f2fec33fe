from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("models/", views.model_list_view, name="models"),
    path("models/<int:pk>/", views.model_detail_view, name="model_detail"),
    path("models/<int:pk>/activate/", views.model_version_activate_view, name="model_activate"),
    path("training-runs/new/", views.training_run_create_view, name="run_create"),
    path("training-runs/<int:pk>/", views.training_run_detail_view, name="run_detail"),
]
